"""The dense-vs-MoD speed report: what it measures must follow from what the models did."""

import copy

import torch

from gamma_mod.eval.speed import SpeedInputs, format_table, kv_cache_bytes, random_inputs, speed_report
from gamma_mod.mod.convert import convert_to_mod

from conftest import NUM_IMAGE_TOKENS


def test_speed_report_dense_vs_mod(tiny_model):
    mod = convert_to_mod(copy.deepcopy(tiny_model), [1, 2], skip_ratio=0.5).eval()
    inputs = random_inputs(tiny_model.config, batch=2, text_tokens=6)
    assert inputs.input_ids.shape == (2, 1 + NUM_IMAGE_TOKENS + 6)
    rows = speed_report({"dense": tiny_model, "mod": mod}, inputs, max_new_tokens=3, repeats=1, warmup=0)
    dense, routed = rows
    assert dense.skip_rate == 0.0
    routable = 1 + NUM_IMAGE_TOKENS  # bos + image
    assert routed.skip_rate == int(0.5 * routable) / routable
    # KV cache: 4 layers of 23 tokens dense; MoD layers 1, 2 hold 23 - 8 tokens.
    per_token_layer = 2 * 2 * tiny_model.config.num_key_value_heads * 16 * 4  # K+V, batch 2, heads, head_dim, fp32
    assert abs(dense.kv_cache_mb * 2**20 - 4 * 23 * per_token_layer) < 1
    assert abs(routed.kv_cache_mb * 2**20 - (2 * 23 + 2 * 15) * per_token_layer) < 1
    assert routed.tflops < dense.tflops
    table = format_table(rows)
    assert "| dense |" in table and "| mod |" in table and "1.00x" in table


def test_kv_cache_bytes_counts_keys_and_values(tiny_model):
    ids = torch.tensor([[1, 7, 8, 9]])
    with torch.no_grad():
        cache = tiny_model(input_ids=ids, use_cache=True).cache
    assert kv_cache_bytes(cache) == 4 * 2 * 1 * 2 * 4 * 16 * 4  # layers, K+V, batch, kv heads, tokens, head_dim, fp32
