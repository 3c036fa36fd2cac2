"""move_image_to_front and the top-level modify_data_config.py script."""

import json
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from gamma_mod.data.convert import image_first, move_image_to_front

ROOT = Path(__file__).resolve().parents[1]


def record(rid, first, image="x.jpg"):
    r = {"id": rid, "conversations": [{"from": "human", "value": first}, {"from": "gpt", "value": "ok"},
                                      {"from": "human", "value": "And?"}, {"from": "gpt", "value": "fine"}]}
    if image:
        r["image"] = image
    return r


# LLaVA's preprocess_multimodal: "<image>\n" + the message without the tag, stripped; what was
# around the tag stays (a double newline, a double space), as the official training sees it.
@pytest.mark.parametrize("value, expected", [
    ("What are the colors of the bus in the image?\n<image>", "<image>\nWhat are the colors of the bus in the image?"),
    ("<image>\nWhat is this?", "<image>\nWhat is this?"),
    ("<image>", "<image>"),
    ("Context line\n<image>\nQuestion?", "<image>\nContext line\n\nQuestion?"),
    ("Look at <image> and answer.", "<image>\nLook at  and answer."),
    ("<image>What is this?", "<image>\nWhat is this?"),
    ("Describe.\n\n<image>\n", "<image>\nDescribe."),
    ("  <image>\n  Indented?  ", "<image>\nIndented?"),
])
def test_image_first(value, expected):
    assert image_first(value) == expected


def test_move_image_to_front_counts_only_changed_records():
    records = [
        record("end", "What is this?\n<image>"),
        record("front", "<image>\nWhat is this?"),
        record("text", "Hi there", image=None),
        record("two-tags", "<image> vs <image>"),
        record("tag-no-image", "What is this?\n<image>", image=None),  # an error for the dataset; left alone
        {"id": "empty", "conversations": []},
    ]
    original = json.loads(json.dumps(records))
    new, changed = move_image_to_front(records)
    assert changed == 1
    assert new[0]["conversations"][0]["value"] == "<image>\nWhat is this?"
    assert new[0]["conversations"][1:] == records[0]["conversations"][1:] and new[0]["image"] == "x.jpg"
    assert new[1:] == records[1:]
    assert records == original, "the input records are not modified"
    assert move_image_to_front(new) == (new, 0), "idempotent"


def run_script(*args):
    return subprocess.run([sys.executable, str(ROOT / "modify_data_config.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT)


def test_script_writes_the_converted_file(tmp_path):
    records = [record("a", "Describe.\n<image>"), record("b", "<image>\nDescribe."), record("c", "Hi", image=None),
               record("d", "Où est le bus ?\n<image>")]
    src, dst = tmp_path / "in.json", tmp_path / "out.json"
    src.write_text(json.dumps(records))
    result = run_script(src, dst)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"changed 2 of 4 records; wrote {dst}"
    assert json.loads(dst.read_text()) == move_image_to_front(records)[0]
    assert "Où" in dst.read_text()  # non-ASCII kept readable


def test_script_reports_a_bad_input_file(tmp_path, capsys):
    # In-process: a second subprocess would spend its time importing torch (via gamma_mod/__init__).
    script = runpy.run_path(str(ROOT / "modify_data_config.py"))
    src = tmp_path / "in.json"
    src.write_text(json.dumps({"id": "not-a-list"}))
    assert script["main"]([str(src), str(tmp_path / "out.json")]) == 1  # a data error (gamma_mod.errors)
    assert f"{src}: expected a JSON list of records, got dict" in capsys.readouterr().err
    assert not (tmp_path / "out.json").exists()
