"""The whole pipeline end to end on a micro model (the quickstart's code path, capped steps), with resume."""

import argparse
import json
import re
import sys
from pathlib import Path

import pytest
import yaml

from packaging.requirements import Requirement

from gamma_mod.cli import main
from gamma_mod.pipeline import add_arguments

from conftest import MICRO_SPEC


def run(tmp_path, strategy, *extra):
    spec = tmp_path / "micro.yaml"
    spec.write_text(yaml.safe_dump({**MICRO_SPEC, "text": {**MICRO_SPEC["text"], "num_hidden_layers": 4}}))
    return main(["pipeline", "--out", str(tmp_path / "run"), "--model", str(spec), "--strategy", strategy,
                 "--captions", "16", "--vqa-train", "6", "--vqa-test", "4", "--max-steps", "3",
                 "--arank-samples", "4", "--eval-samples", "12", *extra])


def assert_embedded_pngs_exist(report, count):
    """Every image report.md links is a drawn PNG next to it."""
    links = re.findall(r"!\[[^]]*\]\(([^)]+)\)", report.read_text())
    assert len(links) == count, links
    for link in links:
        data = (report.parent / link).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000, link


def test_quickstart_install_draws_the_plots():
    """README command 1 (scripts/quickstart.sh) installs no extra, writes to runs/quickstart: plotting is core."""
    root = Path(__file__).resolve().parents[1]
    script = (root / "scripts" / "quickstart.sh").read_text()
    assert 'setup_env.sh"\n' in script and "gamma-mod\" pipeline" in script  # no extra, then the pipeline
    tomllib = pytest.importorskip("tomllib", reason="Python 3.11+")  # the source tree's, not installed metadata
    core = tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(Requirement(r).name == "matplotlib" for r in core)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert parser.parse_args([]).out == "runs/quickstart"


def test_pipeline_end_to_end_and_resume(tmp_path, capsys):
    assert run(tmp_path, "gamma", "--k-dense", "3") == 0
    report = json.loads((tmp_path / "run" / "report_gamma.json").read_text())
    dense, mod, fastv, pdrop, blind = report["rows"]
    assert dense["skipped_fraction"] == 0 and mod["skipped_fraction"] > 0.4
    # Issue 16: accuracy per question type and decode tok/s on every timed row; the image-blind baseline is
    # trained through the dense recipe on the records without images and answers without them.
    for row in (dense, mod, fastv, pdrop, blind):
        assert set(row["accuracy_by_type"]) == {"color", "count", "shape"}
    assert all(r["decode_tokens_per_s"] > 0 for r in (dense, mod, fastv, pdrop))
    assert blind["name"] == "text-only (no image)" and blind["decode_tokens_per_s"] != blind["decode_tokens_per_s"]
    for stage in ("text_only_sft", "text_only"):
        assert (tmp_path / "run" / stage / "complete.json").is_file()
    blind_train = json.loads((tmp_path / "run" / "data_text_only" / "stage2_train.json").read_text())
    assert blind_train and all("image" not in r and "<image>" not in json.dumps(r) for r in blind_train)
    metrics = {m["name"]: m for m in report["metrics"]}
    assert metrics["MoD (gamma)"]["prefill_speedup"] == pytest.approx(
        mod["prefill_samples_per_s"] / dense["prefill_samples_per_s"])
    assert metrics["MoD (gamma)"]["decode_speedup"] == pytest.approx(
        mod["decode_tokens_per_s"] / dense["decode_tokens_per_s"])
    # Training-free rows on the dense weights: FastV K=2 R=0.5, PDrop at 8/16/24 of 32 scaled to 4 layers.
    assert (fastv["name"], fastv["skipped_fraction"], fastv["mod_layers"]) == ("FastV K=2 R=0.5", 0.5, [2, 3])
    assert pdrop["name"] == "PDrop layers=1,2,3 lambda=0.5" and pdrop["mod_layers"] == [1, 2, 3]
    assert pdrop["tflops"] < fastv["tflops"] < dense["tflops"]
    # 4 layers, 3 dense: first, last and the higher-ARank one of the middle two
    assert len(mod["mod_layers"]) == 1 and mod["mod_layers"][0] in (1, 2)
    assert 0 <= mod["accuracy"] <= 1
    assert (tmp_path / "run" / "arank.json").exists() and (tmp_path / "run" / "arank.png").exists()
    # The run folder's summary embeds the ARank plot and every stage's curves (issue 24), all drawn.
    summary = (tmp_path / "run" / "report.md").read_text()
    assert "![ARank per layer](arank.png)" in summary and "| MoD (gamma) |" in summary
    for name in ("loss.png", "routing_loss.png", "skip_fraction.png"):
        assert (tmp_path / "run" / "stage2_gamma" / name).is_file() and f"(stage2_gamma/{name})" in summary
    for stage in ("stage1", "stage2_sft", "stage2_dense"):  # dense stages: a loss curve, no MoD plots
        assert f"({stage}/loss.png)" in summary and f"({stage}/skip_fraction.png)" not in summary
        assert (tmp_path / "run" / stage / "report.md").is_file()
    assert (tmp_path / "run" / "stage2_gamma" / "report.md").is_file()
    assert_embedded_pngs_exist(tmp_path / "run" / "report.md", 7)  # ARank, 3 MoD-stage curves, 3 dense-stage losses
    table = capsys.readouterr().out
    assert "| dense |" in table and "| MoD (gamma) |" in table and "| FastV K=2 R=0.5 |" in table
    assert "| model | accuracy | color | count | shape | TFLOPs/sample |" in table and "| decode tok/s |" in table
    assert "| text-only (no image) |" in table
    # A second run finds every stage complete and only re-evaluates.
    stamp = (tmp_path / "run" / "stage2_gamma" / "complete.json").stat().st_mtime
    assert run(tmp_path, "gamma", "--k-dense", "3") == 0
    assert (tmp_path / "run" / "stage2_gamma" / "complete.json").stat().st_mtime == stamp


def test_pipeline_pmod(tmp_path):
    assert run(tmp_path, "pmod", "--no-prune", "--no-text-only") == 0
    report = json.loads((tmp_path / "run" / "report_pmod.json").read_text())
    assert [r["name"] for r in report["rows"]] == ["dense", "MoD (pmod)"]
    assert not (tmp_path / "run" / "text_only").exists()


def test_pipeline_seeds_one_table_over_runs(tmp_path, capsys):
    """--seeds 0,1: two complete runs in seed_0/ and seed_1/ (each its own data draw), one mean ± spread table."""
    assert run(tmp_path, "pmod", "--no-prune", "--no-text-only", "--seeds", "0,1", "--max-steps", "1") == 0
    out = tmp_path / "run"
    for seed in (0, 1):
        one = json.loads((out / f"seed_{seed}" / "report_pmod.json").read_text())
        assert [m["name"] for m in one["metrics"]] == ["dense", "MoD (pmod)"]
    tests = [(out / f"seed_{seed}" / "data" / "stage2_test.json").read_text() for seed in (0, 1)]
    assert tests[0] != tests[1]
    summary = json.loads((out / "report_pmod_seeds.json").read_text())
    per_seed = [summary["per_seed"][s][0]["accuracy"] for s in ("0", "1")]
    assert summary["seeds"] == [0, 1] and summary["mean"][0]["accuracy"] == pytest.approx(sum(per_seed) / 2)
    table = capsys.readouterr().out
    assert "mean ± sample standard deviation over seeds 0, 1" in table and "| dense |" in table


@pytest.mark.parametrize("twin", ["llava_v1_5_tiny", "llava_hr_tiny", "mgm_hd_tiny"])
def test_pipeline_on_each_base_tiny_twin(tmp_path, twin):
    """Stage 1, SFT, ARank, conversion, MoD SFT and the report on every base family's tiny twin."""
    assert main(["pipeline", "--out", str(tmp_path / twin), "--model", twin, "--captions", "8", "--vqa-train", "4",
                 "--vqa-test", "2", "--max-steps", "2", "--arank-samples", "2", "--eval-samples", "6",
                 "--no-text-only"]) == 0  # the image-blind row is pinned by the end-to-end test
    report = json.loads((tmp_path / twin / "report_gamma.json").read_text())
    dense, mod, *pruners = report["rows"]
    assert [p["name"].split()[0] for p in pruners] == ["FastV", "PDrop"]
    assert mod["mod_layers"] == [1, 2] and mod["skipped_fraction"] > 0.4
    assert (tmp_path / twin / "arank.json").exists()
