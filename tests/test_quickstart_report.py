"""The quickstart report's pieces (issue 16): image-blind records and questions, the per-type / per-seed
table, `--seeds` parsing and aggregation, multi-turn synthetic training records, the timed decode loop."""

import json
import math
from types import SimpleNamespace

import pytest
import torch

from gamma_mod.data.synthetic import write_synthetic_dataset
from gamma_mod.errors import UsageError
from gamma_mod.eval.decode import alternating_decode_rates, decode_seconds
from gamma_mod.eval.questions import Question
from gamma_mod.eval.quickstart_table import aggregate, format_table, row_metrics
from gamma_mod.eval.speed import SpeedInputs
from gamma_mod.eval.textonly import blind_questions, blind_records, write_blind_split
from gamma_mod.pipeline import PipelineReport
from gamma_mod.pipeline_seeds import parse_seeds, run_seeds

from conftest import multimodal_batch


def test_blind_records_drop_the_image_and_its_tag_only():
    record = {"id": "train-0", "image": "vqa_train_00000.png", "conversations": [
        {"from": "human", "value": "<image>\nHow many shapes are there?"}, {"from": "gpt", "value": "two"},
        {"from": "human", "value": "What shape is on the left?"}, {"from": "gpt", "value": "circle"}]}
    assert blind_records([record]) == [{"id": "train-0", "conversations": [
        {"from": "human", "value": "How many shapes are there?"}, {"from": "gpt", "value": "two"},
        {"from": "human", "value": "What shape is on the left?"}, {"from": "gpt", "value": "circle"}]}]
    assert record["image"] == "vqa_train_00000.png"  # the input is not modified
    with pytest.raises(ValueError, match="record 7"):
        blind_records([{"id": 7, "image": "x.png"}])


def test_blind_split_file_and_questions(tmp_path):
    src = tmp_path / "train.json"
    src.write_text(json.dumps([{"id": "a", "image": "i.png", "conversations": [
        {"from": "human", "value": "<image>\nWhat color is the shape on the right?"},
        {"from": "gpt", "value": "red"}]}]))
    dst = write_blind_split(src, tmp_path / "blind" / "train.json")
    assert json.loads(dst.read_text()) == [{"id": "a", "conversations": [
        {"from": "human", "value": "What color is the shape on the right?"}, {"from": "gpt", "value": "red"}]}]
    q = Question("test-0-color", "<image>\nWhat color is the shape on the right?", "/x/i.png", {"answer": "red"})
    assert blind_questions([q]) == [Question("test-0-color", "What color is the shape on the right?", None,
                                             {"answer": "red"})]


def report(name, acc, by_type, tflops, prefill, decode, skipped=0.0, layers=()):
    return PipelineReport(name=name, accuracy=acc, prefill_samples_per_s=prefill, skipped_fraction=skipped,
                          mod_layers=list(layers), tflops=tflops, accuracy_by_type=by_type, decode_tokens_per_s=decode)


def test_row_metrics_ratios_against_dense_and_blind_row_without_speed():
    rows = [report("dense", 0.9, {"color": 1.0, "count": 0.8}, 2.0, 10.0, 100.0),
            report("MoD (gamma)", 0.85, {"color": 0.9, "count": 0.8}, 1.5, 15.0, 110.0, 0.5, [1, 2]),
            report("text-only (no image)", 0.3, {"color": 0.25, "count": 0.35}, math.nan, math.nan, math.nan,
                   math.nan)]
    dense, mod, blind = row_metrics(rows)
    assert (mod["tflops_ratio"], mod["prefill_speedup"], mod["decode_speedup"]) == (0.75, 1.5, 1.1)
    assert (mod["accuracy/color"], mod["layers"], mod["skipped_fraction"]) == (0.9, [1, 2], 0.5)
    assert math.isnan(blind["prefill_speedup"]) and math.isnan(blind["tflops_ratio"])
    table = format_table([dense, mod, blind], chance=0.335)
    lines = table.splitlines()
    assert lines[0] == ("| model | accuracy | color | count | TFLOPs/sample | TFLOPs vs dense | prefill samples/s | "
                        "prefill speed-up | decode tok/s | decode vs dense | skipped tokens | layers skipping |")
    assert lines[3] == ("| MoD (gamma) | 85.0% | 90.0% | 80.0% | 1.5 | 0.750 | 15.0 | 1.50x | 110.0 | 1.10x | 50.0% "
                        "| [1, 2] |")
    assert lines[4] == "| text-only (no image) | 30.0% | 25.0% | 35.0% | - | - | - | - | - | - | - | - |"
    assert "chance level (majority answer per question type): 33.5%" in table and "±" not in table


def test_aggregate_means_and_sample_spread_per_seed_ratios():
    seed0 = row_metrics([report("dense", 0.8, {"shape": 0.7}, 2.0, 10.0, 100.0),
                         report("MoD (gamma)", 0.8, {"shape": 0.6}, 1.0, 20.0, 100.0, 0.5)])
    seed1 = row_metrics([report("dense", 0.9, {"shape": 0.9}, 2.0, 20.0, 100.0),
                         report("MoD (gamma)", 0.7, {"shape": 0.8}, 1.0, 30.0, 120.0, 0.5)])
    means, spreads = aggregate([seed0, seed1])
    dense, mod = means
    assert dense["accuracy"] == pytest.approx(0.85) and spreads[0]["accuracy"] == pytest.approx(0.0707107, abs=1e-6)
    # Speed-ups per seed (2.0 and 1.5), then averaged: not the ratio of mean speeds (25 / 15).
    assert mod["prefill_speedup"] == pytest.approx(1.75)
    assert spreads[1]["prefill_speedup"] == pytest.approx(0.353553, abs=1e-6)
    assert mod["decode_speedup"] == pytest.approx(1.1) and mod["seeds"] == 2
    table = format_table(means, 0.33, spreads, seeds=[0, 1])
    assert "| MoD (gamma) | 75.0 ± 7.1% | 70.0 ± 14.1% | 1 ± 0 | 0.500 ± 0.000 | 25.0 ± 7.1 | 1.75 ± 0.35x |" in table
    assert "seeds 0, 1" in table


def test_parse_seeds():
    assert parse_seeds("3") == [0, 1, 2] and parse_seeds("3", base=5) == [5, 6, 7]
    assert parse_seeds("0,1,2") == [0, 1, 2] and parse_seeds("7,") == [7]
    for bad, message in (("0", ">= 1"), ("a,b", "comma list"), ("1,1", "repeats"), (",", "names no seed")):
        with pytest.raises(UsageError, match=message):
            parse_seeds(bad)


def test_run_seeds_runs_each_seed_in_its_folder_and_aggregates(tmp_path, capsys):
    seen = []

    def run_one(args):
        seen.append((args.seed, args.out, args.seeds, args.fresh))
        rows = [report("dense", 0.8 + 0.1 * args.seed, {"count": 1.0}, 2.0, 10.0, 50.0)]
        out = tmp_path / f"seed_{args.seed}"
        out.mkdir()
        (out / "report_gamma.json").write_text(json.dumps(
            {"metrics": row_metrics(rows), "chance_accuracy": 0.3 + 0.1 * args.seed, "timings_s": {"data": 1.0}}))
        return 0

    args = SimpleNamespace(out=str(tmp_path), fresh=False, seeds="0,1", seed=0, strategy="gamma")
    assert run_seeds(args, [0, 1], run_one) == 0
    assert seen == [(0, str(tmp_path / "seed_0"), None, False), (1, str(tmp_path / "seed_1"), None, False)]
    summary = json.loads((tmp_path / "report_gamma_seeds.json").read_text())
    assert summary["seeds"] == [0, 1] and summary["mean"][0]["accuracy"] == pytest.approx(0.85)
    assert "| dense | 85.0 ± 7.1% | 100.0 ± 0.0% |" in capsys.readouterr().out
    assert "chance level (majority answer per question type): 35.0%" in (tmp_path / "report_gamma_seeds.md").read_text()


def test_multi_turn_training_records(tmp_path):
    data = write_synthetic_dataset(tmp_path / "d", n_captions=2, n_vqa_train=5, n_vqa_test=2, seed=1,
                                   multi_turn_train=True)
    train, test = json.loads(data.stage2_train.read_text()), json.loads(data.stage2_test.read_text())
    assert len(train) == 5 and len(test) == 6  # one 3-round record per training image; test: one per question
    for record in train:
        turns = record["conversations"]
        assert [t["from"] for t in turns] == ["human", "gpt"] * 3
        assert turns[0]["value"].startswith("<image>\n") and all("<image>" not in t["value"] for t in turns[1:])
        asked = {turns[0]["value"].split("\n", 1)[1], turns[2]["value"], turns[4]["value"]}
        assert len(asked) == 3 and "How many shapes are there?" in asked  # count, colour and shape, once each
    assert all(len(r["conversations"]) == 2 for r in test)
    single = write_synthetic_dataset(tmp_path / "s", n_captions=2, n_vqa_train=5, n_vqa_test=2, seed=1)
    assert len(json.loads(single.stage2_train.read_text())) == 15


def test_timed_decode_loop_is_greedy_generation(tiny_model):
    """The loop decode_seconds times produces generate()'s greedy tokens (so it times the real work)."""
    ids, mask, pixels = multimodal_batch(padding_side="left")
    inputs = SpeedInputs(ids, mask, pixels)
    produced = []
    original = tiny_model.forward

    def spy(*args, **kwargs):
        out = original(*args, **kwargs)
        produced.append(out.logits[:, -1].argmax(-1))
        return out

    tiny_model.forward = spy
    decode_seconds(tiny_model, inputs, new_tokens=3)
    tiny_model.forward = original
    with torch.no_grad():
        reference = tiny_model.generate(input_ids=ids, attention_mask=mask, pixel_values=pixels, max_new_tokens=3,
                                        min_new_tokens=3, do_sample=False)
    assert torch.equal(torch.stack(produced[:3], dim=1), reference[:, -3:])
    rates = alternating_decode_rates({"a": tiny_model}, {"a": inputs}, new_tokens=2, repeats=1, warmup=0)
    assert rates["a"] > 0 and math.isfinite(rates["a"])
