"""`gamma-mod compare` end to end on micro models, the shared-weight pruner views, the aggregation over seeds."""

import copy
import json
import shutil

import pytest
import torch

from gamma_mod.cli import main
from gamma_mod.data.synthetic import write_synthetic_dataset
from gamma_mod.data.tokenizer import load_tokenizer, model_token_ids
from gamma_mod.eval.answer import left_pad
from gamma_mod.eval.cli import build_encoder
from gamma_mod.eval.compare import MethodResult, aggregate, format_table
from gamma_mod.eval.flops import layer_flops
from gamma_mod.eval.scorers import synthetic
from gamma_mod.eval.speed import random_inputs, speed_report
from gamma_mod.model import LlavaLlamaForCausalLM
from gamma_mod.mod.convert import convert_to_mod
from gamma_mod.model.builder import build_model
from gamma_mod.model.configuration import load_config
from gamma_mod.prune.view import with_pruner

from conftest import MICRO_SPEC, multimodal_batch

N_IMAGE = 16  # MICRO_SPEC: (32 / 8) ** 2 patches


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    data = write_synthetic_dataset(root / "data", n_captions=2, n_vqa_train=2, n_vqa_test=3, seed=0)
    tokenizer = load_tokenizer(str(data.tokenizer))
    torch.manual_seed(0)
    dense = build_model({**MICRO_SPEC, "text": {**MICRO_SPEC["text"], "num_hidden_layers": 4}},
                        **model_token_ids(tokenizer))
    dense.save_pretrained(root / "dense")
    tokenizer.save_pretrained(root / "dense")
    convert_to_mod(copy.deepcopy(dense), [1, 2], routing_ratio=0.5).save_pretrained(root / "mod")
    tokenizer.save_pretrained(root / "mod")
    return root, data


def test_compare_command_table_json_plot_and_hand_flops(folders):
    root, data = folders
    out = root / "out"
    assert main(["compare", "--base", str(root / "dense"), "--mod", str(root / "mod"), "--data", str(root / "data"),
                 "--fastv", "K=2,R=0.5", "--pdrop", "layers=1,3,lambda=0.5", "--out", str(out),
                 "--repeats", "1", "--speed-samples", "4", "--limit", "6"]) == 0
    rows = {r["name"]: r for r in json.loads((out / "compare.json").read_text())["rows"]}
    assert list(rows) == ["dense", "FastV K=2 R=0.5", "PDrop layers=1,3 lambda=0.5", "γ-MoD (mod)"]
    assert (out / "compare.png").stat().st_size > 0 and "| FastV K=2 R=0.5 |" in (out / "compare.md").read_text()

    # Accuracy is the benchmark's own score of each method's answer file.
    for stem, name in [("dense", "dense"), ("FastV_K=2_R=0.5", "FastV K=2 R=0.5")]:
        assert rows[name]["accuracy"] == synthetic.score(out / "answers" / f"{stem}.jsonl", data.stage2_test)["accuracy"]

    # TFLOPs per sample by hand from the speed prompts' lengths T (the first 4 questions):
    # dense 4 layers at T; FastV 2 at T and 2 at T-8; PDrop layer 0 at T, 1-2 at T-8, 3 at T-12.
    config = json.loads((root / "dense" / "config.json").read_text())
    d, f = config["hidden_size"], config["intermediate_size"]
    tokenizer = load_tokenizer(str(root / "dense"))
    encode = build_encoder(tokenizer, load_config(root / "dense"), "vicuna_v1")
    lengths = [len(encode(q)[0]) for q in synthetic.read_questions(data.stage2_test)[:4]]

    def per_sample(counts):
        return sum(sum(layer_flops(t + c, d, f) for c in counts) for t in lengths) / len(lengths) / 1e12

    assert rows["dense"]["tflops"] == pytest.approx(per_sample([0, 0, 0, 0]))
    assert rows["FastV K=2 R=0.5"]["tflops"] == pytest.approx(per_sample([0, 0, -8, -8]))
    assert rows["PDrop layers=1,3 lambda=0.5"]["tflops"] == pytest.approx(per_sample([0, -8, -8, -12]))
    assert rows["FastV K=2 R=0.5"]["skipped"] == 0.5 and rows["FastV K=2 R=0.5"]["layers"] == [2, 3]
    assert rows["PDrop layers=1,3 lambda=0.5"]["skipped"] == pytest.approx((0.5 + 0.5 + 0.75) / 3)
    assert rows["γ-MoD (mod)"]["layers"] == [1, 2] and rows["γ-MoD (mod)"]["tflops"] < rows["dense"]["tflops"]
    # KV cache per sample: the pruned layers hold 8 fewer tokens (FastV, 2 of 4 layers).
    dense_kv, fastv_kv = rows["dense"]["kv_cache_mb"], rows["FastV K=2 R=0.5"]["kv_cache_mb"]
    width = max(lengths)  # left padding: every row caches the batch width
    assert fastv_kv / dense_kv == pytest.approx((2 * width + 2 * (width - 8)) / (4 * width))


def test_bad_pruner_setting_fails_before_loading(folders):
    root, _ = folders
    # The CLI's error rule: one line, exit code 2, nothing loaded or written (tests/test_cli_errors.py).
    assert main(["compare", "--base", str(root / "dense"), "--data", str(root / "data"), "--fastv", "K=2,R=2",
                 "--out", str(root / "bad")]) == 2
    assert not (root / "bad").exists()


def test_pruner_view_shares_weights_and_leaves_the_model_alone(tiny_model):
    ids, mask, pixels = multimodal_batch(batch=2, padding_side="left")
    view = with_pruner(tiny_model, "fastv:K=2,R=0.5")
    assert tiny_model.model.pruner is None and tiny_model.config.prune is None
    assert view.model.layers[0].self_attn.q_proj.weight is tiny_model.model.layers[0].self_attn.q_proj.weight
    reference = copy.deepcopy(tiny_model)
    reference.set_pruner("fastv:K=2,R=0.5")
    with torch.no_grad():
        assert torch.equal(view(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits,
                           reference(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits)
        plain = tiny_model(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits
    assert tiny_model.model.last_prune_stats is None and not torch.equal(plain[:, -1], reference(
        input_ids=ids, attention_mask=mask, pixel_values=pixels).logits[:, -1])


def test_aggregate_over_seeds_and_table():
    def row(name, acc, tflops, speed):
        return MethodResult(name=name, accuracy=acc, tflops=tflops, prefill_samples_per_s=speed, kv_cache_mb=1.0,
                            skipped=0.0, layers=[])

    runs = [[row("dense", 0.5, 2.0, 10.0), row("FastV K=2 R=0.5", 0.4, 1.0, 20.0)],
            [row("dense", 0.7, 2.0, 14.0), row("FastV K=2 R=0.5", 0.6, 1.0, 22.0)]]
    means, spread = aggregate(runs)
    assert [m.accuracy for m in means] == pytest.approx([0.6, 0.5])
    assert spread["dense"]["accuracy"] == pytest.approx(0.1414, abs=1e-4)  # sample std of 0.5, 0.7
    table = format_table(means, spread)
    assert "| FastV K=2 R=0.5 | 50.0 ± 14.1% | 1 | 0.500 | 21.0 ± 1.4 | 1.75x |" in table


def test_speed_rows_for_pruners_count_pruned_tokens(tiny_model):
    """`gamma-mod speed --prune`: the pruned row's TFLOPs and KV cache follow from the tokens it kept."""
    view = with_pruner(tiny_model, "fastv:K=2,R=0.5")
    inputs = random_inputs(tiny_model.config, batch=2, text_tokens=6)  # T = 1 + 16 + 6 = 23
    dense, fastv = speed_report({"dense": tiny_model, "fastv": view}, inputs, max_new_tokens=2, repeats=1, warmup=0)
    d, f = tiny_model.config.hidden_size, tiny_model.config.intermediate_size
    gqa = dict(q_dim=4 * 16, kv_dim=2 * 16)  # 4 query heads, 2 K/V heads of 16: K/V counted at GQA width
    assert fastv.tflops == pytest.approx((2 * layer_flops(23, d, f, **gqa) + 2 * layer_flops(15, d, f, **gqa)) / 1e12)
    assert dense.tflops == pytest.approx(4 * layer_flops(23, d, f, **gqa) / 1e12)
    per_token_layer = 2 * 2 * tiny_model.config.num_key_value_heads * 16 * 4  # K+V, batch 2, heads, head_dim, fp32
    assert fastv.kv_cache_mb * 2**20 == pytest.approx((2 * 23 + 2 * 15) * per_token_layer)


def test_eval_prune_flag_answers_apart_and_saves_when_asked(folders, tmp_path):
    root, data = folders
    model_dir = tmp_path / "dense"
    shutil.copytree(root / "dense", model_dir)
    assert main(["eval", "--model", str(model_dir), "--benchmark", "synthetic", "--data", str(root / "data"),
                 "--prune", "pdrop:layers=1,2,lambda=0.5", "--limit", "3", "--save-prune"]) == 0
    assert len((model_dir / "eval" / "synthetic_pdrop_layers1,2_lambda0.5" / "answers.jsonl").read_text().splitlines()) == 3
    assert not (model_dir / "eval" / "synthetic").exists()  # the unpruned answers are another folder
    saved = json.loads((model_dir / "config.json").read_text())["prune"]
    assert saved == {"method": "pdrop", "layers": [1, 2], "lam": 0.5, "ratios": None, "query": "last"}
    assert LlavaLlamaForCausalLM.from_pretrained(model_dir).model.pruner.describe() == "PDrop layers=1,2 lambda=0.5"
    # Without --save-prune the folder's config is left alone; "none" switches a saved pruner off for one run.
    assert main(["eval", "--model", str(model_dir), "--benchmark", "synthetic", "--data", str(root / "data"),
                 "--prune", "none", "--limit", "2"]) == 0
    assert json.loads((model_dir / "config.json").read_text())["prune"] == saved
    assert (model_dir / "eval" / "synthetic_noprune" / "answers.jsonl").exists()
