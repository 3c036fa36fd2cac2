"""The bundled synthetic dataset: deterministic, fully covered by its tokenizer, answers checkable."""

import json
import os
import random
from collections import Counter

import pytest
from PIL import Image

from gamma_mod.cli import main as cli_main
from gamma_mod.data.formats import validate_record
from gamma_mod.data.preprocess import tokenize_record
from gamma_mod.data.synthetic import (COLORS, NUMBERS, SHAPES, SLOTS, SYNTHETIC_VOCAB, SceneObject, caption,
                                      chance_accuracy, draw_scene, synthetic_vocabulary, write_synthetic_dataset)
from gamma_mod.data.templates import get_template
from gamma_mod.data.tokenizer import SPECIAL_TOKENS, load_tokenizer

SIZES = dict(n_captions=6, n_vqa_train=4, n_vqa_test=5, image_size=32)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("synth") / "a", seed=3, **SIZES)


def read(path):
    return json.loads(path.read_text())


def test_same_seed_same_bytes_other_seed_differs(data, tmp_path):
    again = write_synthetic_dataset(tmp_path / "b", seed=3, **SIZES)
    other = write_synthetic_dataset(tmp_path / "c", seed=4, **SIZES)
    for name in ("stage1.json", "stage2_train.json", "stage2_test.json"):
        assert (data.root / name).read_bytes() == (again.root / name).read_bytes()
    images = sorted(p.name for p in data.images.iterdir())
    assert images == sorted(p.name for p in again.images.iterdir())
    assert len(images) == 6 + 4 + 5
    assert all((data.images / n).read_bytes() == (again.images / n).read_bytes() for n in images)
    assert data.chance_accuracy == again.chance_accuracy
    assert read(other.stage2_train) != read(data.stage2_train)


def test_records_are_valid_llava_records_with_single_word_answers(data):
    stage1, train, test = read(data.stage1), read(data.stage2_train), read(data.stage2_test)
    assert (len(stage1), len(train), len(test)) == (6, 12, 15)  # three questions per VQA image
    for i, record in enumerate(stage1 + train + test):
        validate_record(record, i, "synthetic")
        assert (data.images / record["image"]).exists()
    assert all(r["conversations"][0]["value"] == "<image>" for r in stage1)
    answers = {"count": set(NUMBERS.values()), "color": set(COLORS), "shape": set(SHAPES)}
    for record in train + test:
        question, answer = (t["value"] for t in record["conversations"])
        assert question.startswith("<image>\n")
        assert answer in answers[record["id"].rsplit("-", 1)[1]], record
    assert {r["image"] for r in train}.isdisjoint(r["image"] for r in test)


def test_tokenizer_covers_every_record(data):
    tokenizer = load_tokenizer(str(data.tokenizer))
    assert set(SPECIAL_TOKENS) <= set(tokenizer.get_vocab())
    for path, template in ((data.stage1, "plain"), (data.stage2_train, "vicuna_v1"), (data.stage2_test, "vicuna_v1")):
        for record in read(path):
            sample = tokenize_record(record, tokenizer, get_template(template), 64, 512)
            assert tokenizer.unk_token_id not in sample.input_ids, record["id"]
    assert list(SYNTHETIC_VOCAB) == synthetic_vocabulary()
    assert {"red", "yellow", "circle", "triangle", "left", "center", "three", "user", "assistant", ":"} <= set(
        SYNTHETIC_VOCAB)
    assert not set(SPECIAL_TOKENS) & set(SYNTHETIC_VOCAB)


def test_chance_accuracy_is_the_per_type_majority_rate(data):
    by_type = {}
    for record in read(data.stage2_test):
        by_type.setdefault(record["id"].rsplit("-", 1)[1], Counter())[record["conversations"][1]["value"]] += 1
    majority = sum(c.most_common(1)[0][1] for c in by_type.values())
    assert data.chance_accuracy == majority / 15
    # by hand: count answers two, two, one -> 2 right; colour red -> 1 right: 3 of 4
    records = [{"conversations": [{}, {"value": a}]} for a in ("two", "two", "one", "red")]
    assert chance_accuracy(records, ["count", "count", "count", "color"]) == 0.75


def test_caption_and_drawing():
    objects = [SceneObject("circle", "red", "left"), SceneObject("square", "blue", "right")]
    assert caption(objects) == "a red circle on the left and a blue square on the right"
    image = draw_scene([SceneObject("square", "green", "left")], 48, random.Random(0))
    thirds = [image.crop((i * 16, 0, (i + 1) * 16, 48)).getcolors(4096) for i in range(3)]  # [(count, rgb)]
    assert COLORS["green"] in {c for _, c in thirds[0]}  # the shape is in the left slot ...
    assert {c for _, c in thirds[2]} == {(245, 245, 245)}  # ... the right one is background only
    assert SLOTS == ("left", "center", "right")


def test_complete_dataset_is_reused_not_rewritten(data):
    before = os.stat(data.stage1).st_mtime_ns
    again = write_synthetic_dataset(data.root, seed=3, **SIZES)
    assert os.stat(data.stage1).st_mtime_ns == before and again == data


def test_synth_command(tmp_path, capsys):
    out = tmp_path / "cli"
    assert cli_main(["synth", "--out", str(out), "--captions", "2", "--vqa-train", "1", "--vqa-test", "2",
                     "--image-size", "16"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"wrote {out}: stage1.json 2 records, stage2_train.json 3 records, "
                           "stage2_test.json 6 records; tokenizer in tokenizer/; chance accuracy on stage2_test.json ")
    assert line.endswith("%")
    with Image.open(out / "images" / "cap_00000.png") as img:
        assert img.size == (16, 16)
