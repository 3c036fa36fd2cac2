"""The whole pipeline end to end on a micro model (the quickstart's code path, capped steps), with resume."""

import json
import sys

import pytest
import yaml

from gamma_mod.cli import main

from conftest import MICRO_SPEC


def run(tmp_path, strategy, *extra):
    spec = tmp_path / "micro.yaml"
    spec.write_text(yaml.safe_dump({**MICRO_SPEC, "text": {**MICRO_SPEC["text"], "num_hidden_layers": 4}}))
    return main(["pipeline", "--out", str(tmp_path / "run"), "--model", str(spec), "--strategy", strategy,
                 "--captions", "16", "--vqa-train", "6", "--vqa-test", "4", "--max-steps", "3",
                 "--arank-samples", "4", "--eval-samples", "12", *extra])


def test_pipeline_end_to_end_and_resume(tmp_path, capsys):
    assert run(tmp_path, "gamma", "--k-dense", "3") == 0
    report = json.loads((tmp_path / "run" / "report_gamma.json").read_text())
    dense, mod, fastv, pdrop = report["rows"]
    assert dense["skipped_fraction"] == 0 and mod["skipped_fraction"] > 0.4
    # Training-free rows on the dense weights: FastV K=2 R=0.5, PDrop at 8/16/24 of 32 scaled to 4 layers.
    assert (fastv["name"], fastv["skipped_fraction"], fastv["mod_layers"]) == ("FastV K=2 R=0.5", 0.5, [2, 3])
    assert pdrop["name"] == "PDrop layers=1,2,3 lambda=0.5" and pdrop["mod_layers"] == [1, 2, 3]
    assert pdrop["tflops"] < fastv["tflops"] < dense["tflops"]
    # 4 layers, 3 dense: first, last and the higher-ARank one of the middle two
    assert len(mod["mod_layers"]) == 1 and mod["mod_layers"][0] in (1, 2)
    assert 0 <= mod["accuracy"] <= 1
    assert (tmp_path / "run" / "arank.json").exists() and (tmp_path / "run" / "arank.png").exists()
    # The run folder's summary embeds the ARank plot and the MoD stage's curves (issue 24).
    summary = (tmp_path / "run" / "report.md").read_text()
    assert "![ARank per layer](arank.png)" in summary and "| MoD (gamma) |" in summary
    for name in ("loss.png", "routing_loss.png", "skip_fraction.png"):
        assert (tmp_path / "run" / "stage2_gamma" / name).is_file() and f"(stage2_gamma/{name})" in summary
    assert (tmp_path / "run" / "stage2_gamma" / "report.md").is_file()
    table = capsys.readouterr().out
    assert "| dense |" in table and "| MoD (gamma) |" in table and "| FastV K=2 R=0.5 |" in table
    # A second run finds every stage complete and only re-evaluates.
    stamp = (tmp_path / "run" / "stage2_gamma" / "complete.json").stat().st_mtime
    assert run(tmp_path, "gamma", "--k-dense", "3") == 0
    assert (tmp_path / "run" / "stage2_gamma" / "complete.json").stat().st_mtime == stamp


def test_pipeline_pmod(tmp_path):
    assert run(tmp_path, "pmod", "--no-prune") == 0
    report = json.loads((tmp_path / "run" / "report_pmod.json").read_text())
    assert [r["name"] for r in report["rows"]] == ["dense", "MoD (pmod)"]


@pytest.mark.parametrize("twin", ["llava_v1_5_tiny", "llava_hr_tiny", "mgm_hd_tiny"])
def test_pipeline_on_each_base_tiny_twin(tmp_path, twin):
    """Stage 1, SFT, ARank, conversion, MoD SFT and the report on every base family's tiny twin."""
    assert main(["pipeline", "--out", str(tmp_path / twin), "--model", twin, "--captions", "8", "--vqa-train", "4",
                 "--vqa-test", "2", "--max-steps", "2", "--arank-samples", "2", "--eval-samples", "6"]) == 0
    report = json.loads((tmp_path / twin / "report_gamma.json").read_text())
    dense, mod, *pruners = report["rows"]
    assert [p["name"].split()[0] for p in pruners] == ["FastV", "PDrop"]
    assert mod["mod_layers"] == [1, 2] and mod["skipped_fraction"] > 0.4
    assert (tmp_path / twin / "arank.json").exists()
