"""`gamma-mod pipeline --base <family>_tiny [--video]`: the whole pipeline on each Hugging Face family's tiny twin.

Smoke runs (a few samples, max-steps 1): every step runs and writes its output (dense SFT, ARank over every
decoder layer, the converted MoD twin, both adaptation runs, the dense-vs-MoD table and report). What is
checked is what each step must produce: ARank values for each of the family's 4 decoder layers, the MoD
layers being those ARank left (first and last dense), the converted folder loading as the family's MoD twin
with exactly those layers, the MoD row skipping half of the routable tokens (--skip-ratio 0.5) and costing
fewer TFLOPs than dense, the answers scored on the held-out questions asked.
"""

from __future__ import annotations

import json

import pytest

from gamma_mod.cli import main
from gamma_mod.families import get_family, load_family_model

FAMILIES = ("llava_hf", "llava_onevision", "qwen2_5_vl", "qwen3_vl")
SMOKE = ["--captions", "4", "--vqa-train", "4", "--vqa-test", "2", "--max-steps", "1", "--arank-samples", "4",
         "--eval-samples", "6", "--batch-size", "4", "--speed-repeats", "1"]


def _check_run(out, family: str, n_questions: int) -> dict:
    report = json.loads((out / "report_gamma.json").read_text())
    assert report["family"] == family
    dense, mod = report["rows"]
    assert (dense["name"], mod["name"]) == ("dense", "MoD (gamma)")
    arank = json.loads((out / "arank.json").read_text())
    assert len(arank["mean"]) == 4 and all(v > 0 for v in arank["mean"])
    # k_dense = max(2, round(4 * 4 / 32)) = 2: the first and last layer stay dense, the two middle ones are MoD
    assert mod["mod_layers"] == [1, 2] and dense["mod_layers"] == []
    assert mod["skipped_fraction"] == pytest.approx(0.5, abs=0.05)
    assert dense["skipped_fraction"] == 0.0
    assert mod["tflops"] < dense["tflops"]
    for name in ("dense", "MoD (gamma)"):
        assert report["per_type"][name]["answered"] == n_questions
    table = (out / "report_gamma.md").read_text()
    assert "| dense | " in table and "| MoD (gamma) | " in table and "chance level" in table
    converted = load_family_model(out / "converted_gamma")
    assert get_family(converted.config).name == family and converted.mod_layer_indices == [1, 2]
    for stage in ("stage2_sft", "stage2_gamma", "stage2_dense"):
        assert (out / stage / "complete.json").is_file()
        assert (out / stage / "processor_config.json").is_file()  # the family's processor travels with the model
    return report


@pytest.mark.parametrize("family", FAMILIES)
def test_pipeline_images_smoke(tmp_path, family, capsys):
    out = tmp_path / "run"
    assert main(["pipeline", "--base", f"{family}_tiny", "--out", str(out), *SMOKE]) == 0
    printed = capsys.readouterr().out
    assert "| MoD (gamma) |" in printed
    _check_run(out, family, n_questions=6)


def test_pipeline_video_smoke(tmp_path):
    out = tmp_path / "run"
    assert main(["pipeline", "--base", "qwen2_5_vl_tiny", "--video", "--out", str(out), *SMOKE]) == 0
    report = _check_run(out, "qwen2_5_vl", n_questions=6)
    assert report["video"] is True
    # the video set's question types, scored per type
    assert {"accuracy/direction", "accuracy/count", "accuracy/color"} <= set(report["per_type"]["dense"])
    records = json.loads((out / "data_video" / "stage2_train.json").read_text())
    assert all("video" in r and "<video>" in r["conversations"][0]["value"] for r in records)


def test_pipeline_family_flag_errors(tmp_path):
    assert main(["pipeline", "--base", "tiny", "--out", str(tmp_path / "a")]) == 2  # a fork spec is not a family
    assert main(["pipeline", "--base", "llava_hf_tiny", "--video", "--out", str(tmp_path / "b")]) == 2  # no video
    assert main(["pipeline", "--video", "--out", str(tmp_path / "c")]) == 2  # family flags need --base
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()
