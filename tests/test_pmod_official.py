"""`strategy: pmod` defaults reproduce the official p-MoD layer (MCG-NJU/p-MoD,
llava/model/language_model/pmod_llava_llama.py `ModLayer`, `shifted_cos_with_ratio`).

The reference here is written from the official rules, not from our code:
    logit = h @ w + b (Linear(hidden, 1, bias=True) on the raw hidden state); logit[non-target] = -inf
    s     = tanh(logit) * 0.2 + 1                                   ("tanh_0.2_1")
    k     = trunc(fp32(n_target) * fp32(ratio))
    top-k of s over the row, equal values to the lower position (CUDA torch.topk's order)
    kept  = chosen targets + every non-target; padding is not in the layer (each row runs alone)
    out[kept] = mlp(norm(h + attn)); out[target] *= s; out[kept] += h + attn
    attention: causal among the kept tokens at their original positions
    decode: the plain layer over the kept tokens' cached K/V, at the token's true position
"""

import math
import re

import numpy as np
import pytest
import torch
from transformers.cache_utils import DynamicCache
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from gamma_mod.mod.convert import convert_to_mod
from gamma_mod.mod.layer import ModForwardContext
from gamma_mod.mod.strategies import prd_retention
from gamma_mod.model import LlavaLlamaForCausalLM

from conftest import tiny_config

# The official PRD table for 32 layers (shiftedcos_decay_0.85_0.15, mod_router_factor 0.5), to 4 decimals.
OFFICIAL_RETENTION_32 = {
    8: 0.8445, 9: 0.8061, 10: 0.7645, 11: 0.7202, 12: 0.6737, 13: 0.6253, 14: 0.5757, 15: 0.5253,
    16: 0.4747, 17: 0.4243, 18: 0.3747, 19: 0.3263, 20: 0.2798, 21: 0.2355, 22: 0.1939, 23: 0.1555,
    **{layer: 0.15 for layer in range(24, 32)},
}


def official_ratio(layer: int, average: float = 0.5) -> float:
    """shifted_cos_with_ratio, then the max with min_ratio, in the official operation order."""
    return max(math.cos(layer * math.pi / 31) / 2 + average, 0.15)


# -- PRD and the kept count --------------------------------------------------------------------------
def test_prd_table_for_32_layers_equals_official():
    retention = prd_retention(32)
    assert sorted(retention) == list(range(8, 32))
    assert {i: round(r, 4) for i, r in retention.items()} == OFFICIAL_RETENTION_32
    assert all(retention[i] == official_ratio(i) for i in retention), "bit-identical to the official formula"


def test_kept_count_is_official_trunc_for_every_layer_and_length(tiny_model):
    """k = trunc(n * ratio) in fp32 for n = 0..3000 at every MoD layer of the 32-layer schedule, through
    the config's stored skip ratios (1 - retention)."""
    from gamma_mod.mod.config import ModConfig
    from gamma_mod.mod.strategies import PModStrategy

    mod = ModConfig(strategy="pmod", mod_layers_idx=list(range(8, 32)))
    strategy = PModStrategy(mod)
    mod.layer_skip_ratios = strategy.layer_skip_ratios(32)
    n = torch.arange(3001)
    for layer in range(8, 32):
        expected = np.trunc(np.arange(3001, dtype=np.float32) * np.float32(official_ratio(layer))).astype(np.int64)
        assert torch.equal(strategy.keep_count(n, mod.layer_skip_ratio(layer)), torch.from_numpy(expected)), layer
    # Differs from the old count n - floor(n * skip) wherever n * ratio is fractional, e.g. 13 x 0.75:
    assert int(strategy.keep_count(torch.tensor([13]), 0.25)) == 9


def test_convert_cli_prints_the_official_layer_set(tmp_path, capsys):
    from gamma_mod.cli import main

    config = tiny_config(num_hidden_layers=32, hidden_size=16, intermediate_size=32, num_attention_heads=2,
                         num_key_value_heads=1)
    LlavaLlamaForCausalLM(config).save_pretrained(tmp_path / "dense")
    assert main(["convert", "--model", str(tmp_path / "dense"), "--strategy", "pmod",
                 "--out", str(tmp_path / "pmod")]) == 0
    out = capsys.readouterr().out
    assert "24 of 32 layers MoD [8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, " \
           "28, 29, 30, 31], strategy pmod" in out
    printed = {int(i): float(r) for i, r in re.findall(r"(\d+):(\d\.\d{4})", out)}
    assert printed == OFFICIAL_RETENTION_32
    loaded = LlavaLlamaForCausalLM.from_pretrained(tmp_path / "pmod")
    assert loaded.model.mod_layer_indices == list(range(8, 32))
    assert loaded.model.layers[8].router is not loaded.model.layers[9].router


# -- the layer -----------------------------------------------------------------------------------------
RETENTION = official_ratio(11)  # 0.7202: n * ratio is fractional for every row below
# Per row: (non-targets before, targets, non-targets after); rows are padded to WIDTH.
ROWS = [(3, 16, 7), (2, 13, 7), (4, 11, 3)]
WIDTH = 26


def reference_attention(layer, rotary, x, positions, past=None):
    """Softmax attention of x (T, C) at `positions`, causal, after the `past` (k, v) keys (all visible)."""
    attn, config = layer.self_attn, layer.self_attn.config
    t, heads, kv_heads, dim = x.shape[0], config.num_attention_heads, config.num_key_value_heads, attn.head_dim
    q = attn.q_proj(x).view(t, heads, dim).transpose(0, 1)
    k = attn.k_proj(x).view(t, kv_heads, dim).transpose(0, 1)
    v = attn.v_proj(x).view(t, kv_heads, dim).transpose(0, 1)
    cos, sin = rotary(x[None], positions[None])
    q, k = (y[0] for y in apply_rotary_pos_emb(q[None], k[None], cos, sin))
    if past is not None:
        k, v = torch.cat([past[0], k], dim=1), torch.cat([past[1], v], dim=1)
    s = k.shape[1]
    rep = heads // kv_heads
    scores = q @ k.repeat_interleave(rep, dim=0).transpose(-1, -2) / math.sqrt(dim)  # (H, t, s)
    future = torch.arange(s)[None, :] > torch.arange(t)[:, None] + (s - t)
    probs = scores.masked_fill(future, float("-inf")).softmax(dim=-1)
    out = (probs @ v.repeat_interleave(rep, dim=0)).transpose(0, 1).reshape(t, heads * dim)
    return attn.o_proj(out), (k, v)


def official_top_k(s: torch.Tensor, k: int) -> set[int]:
    return set(sorted(range(len(s)), key=lambda i: (-s[i].item(), i))[:k])


def reference_prefill(layer, rotary, h, target, ratio, alpha=0.2):
    """One unpadded row (T, C) through the official ModLayer; returns kept (T,), output (T, C), kept K/V."""
    linear = layer.router.router
    logit = torch.nn.functional.linear(h, linear.weight, linear.bias)[:, 0]
    logit = logit.masked_fill(~target, float("-inf"))
    s = torch.tanh(logit) * alpha + 1.0
    k = int(np.trunc(np.float32(int(target.sum())) * np.float32(ratio)))
    chosen = torch.zeros_like(target)
    chosen[sorted(official_top_k(s, k))] = True
    kept = (chosen & target) | ~target
    idx = kept.nonzero().squeeze(1)
    x = h[idx]
    attn, kv = reference_attention(layer, rotary, layer.input_layernorm(x), idx)
    residual = x + attn
    out = h.clone()
    out[idx] = layer.mlp(layer.post_attention_layernorm(residual))
    out[target] = out[target] * s[target].unsqueeze(-1)
    out[idx] = out[idx] + residual
    return kept, out, kv, s


def reference_decode(layer, rotary, x, position, kv):
    """The plain decoder layer for one token x (C,) at `position`, over the kept tokens' K/V."""
    attn, _ = reference_attention(layer, rotary, layer.input_layernorm(x[None]), torch.tensor([position]), past=kv)
    h = x[None] + attn
    return (h + layer.mlp(layer.post_attention_layernorm(h)))[0]


def padded_batch(padding_side: str, scenario: str, hidden: int, seed: int = 0):
    """Hidden states (B, WIDTH, C), target mask, attention mask; scenario shapes the router's channel 0."""
    g = torch.Generator().manual_seed(seed)
    batch = len(ROWS)
    h = torch.randn(batch, WIDTH, hidden, generator=g)
    target = torch.zeros(batch, WIDTH, dtype=torch.bool)
    mask = torch.zeros(batch, WIDTH, dtype=torch.long)
    for b, (before, n, after) in enumerate(ROWS):
        length = before + n + after
        start = 0 if padding_side == "right" else WIDTH - length
        mask[b, start:start + length] = 1
        target[b, start + before:start + before + n] = True
        if scenario != "random":
            # Channel 0 x router weight 15: |logit| >= 30 saturates tanh in fp32 -> s exactly 1.2 or 0.8;
            # |logit| <= 1.5 does not. Counts (high, unsaturated, low) per scenario, shuffled.
            high, middle = (n - 2, 1) if scenario == "saturated_high" else (2, 2)
            level = torch.cat([torch.empty(high).uniform_(2.0, 3.0, generator=g),
                               torch.empty(middle).uniform_(-0.1, 0.1, generator=g),
                               -torch.empty(n - high - middle).uniform_(2.0, 3.0, generator=g)])
            h[b, start + before:start + before + n, 0] = level[torch.randperm(n, generator=g)]
    return h, target, mask


def pmod_layer(scenario: str):
    torch.manual_seed(0)
    model = LlavaLlamaForCausalLM(tiny_config())
    model = convert_to_mod(model, [1], strategy="pmod", layer_skip_ratios={1: 1.0 - RETENTION}).eval()
    layer = model.model.layers[1]
    with torch.no_grad():
        if scenario == "random":
            layer.router.router.weight.normal_(std=0.3)
            layer.router.router.bias.fill_(0.1)
        else:
            layer.router.router.weight.zero_()
            layer.router.router.weight[0, 0] = 15.0
            layer.router.router.bias.zero_()
    return model, layer


@pytest.mark.parametrize("scenario", ["random", "saturated_high", "saturated_low"])
@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_layer_equals_official_on_padded_batch_prefill_and_decode(scenario, padding_side):
    model, layer = pmod_layer(scenario)
    rotary = model.model.rotary_emb
    h, target, mask = padded_batch(padding_side, scenario, model.config.hidden_size)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache(config=model.config)
    ctx = ModForwardContext(routable=target, attention_mask=mask)
    with torch.no_grad():
        ours = layer(h, position_embeddings=rotary(h, positions), cache=cache, use_cache=True, mod_context=ctx)
    keep = ctx.stats[1].keep

    new = torch.randn(len(ROWS), 1, h.shape[-1], generator=torch.Generator().manual_seed(1))
    lengths = mask.sum(dim=1)
    step = ModForwardContext(routable=torch.zeros(len(ROWS), 1, dtype=torch.bool),
                             decode=torch.ones(len(ROWS), 1, dtype=torch.bool),
                             attention_mask=torch.ones(len(ROWS), 1, dtype=torch.long))
    with torch.no_grad():
        ours_decode = layer(new, position_embeddings=rotary(new, lengths[:, None]), cache=cache, use_cache=True,
                            mod_context=step)
    assert step.stats[1].keep.all(), "decoding is dense"

    for b in range(len(ROWS)):
        real = mask[b].bool()
        with torch.no_grad():
            kept, expected, kv, s = reference_prefill(layer, rotary, h[b, real], target[b, real], RETENTION)
            expected_decode = reference_decode(layer, rotary, new[b, 0], int(lengths[b]), kv)
        assert torch.equal(keep[b, real], kept), f"row {b}: keep mask"
        torch.testing.assert_close(ours[b, real], expected, atol=1e-6, rtol=0)
        torch.testing.assert_close(ours_decode[b, 0], expected_decode, atol=1e-6, rtol=0)
        assert cache.layers[1].keys.shape[2] >= int(kept.sum())

        # The scenarios do what they claim (and pin the reference's tie rule).
        before, n_target, _ = ROWS[b]
        k = int(np.trunc(np.float32(n_target) * np.float32(RETENTION)))
        row_target = target[b, real]
        kept_targets = (kept & row_target).nonzero().squeeze(1)
        if scenario == "saturated_high":
            # More targets at exactly 1.2 than slots: the lowest positions win, not the largest logits.
            at_top = ((s == torch.tensor(1.2)) & row_target).nonzero().squeeze(1)
            assert len(at_top) > k and torch.equal(kept_targets, at_top[:k])
            by_logit = h[b, real, 0].masked_fill(~row_target, float("-inf")).argsort(descending=True)[:k]
            assert set(by_logit.tolist()) != set(kept_targets.tolist())
        if scenario == "saturated_low":
            # The slots reach w = 0.8, where the non-targets (w = 0.8 too) tie with the targets saturated
            # low; the non-targets before the image take slots first, so fewer than k targets stay.
            above = int(((s > torch.tensor(0.8)) & row_target).sum())
            assert above < k and len(kept_targets) == above + max(0, k - above - before) < k


def test_ties_are_broken_by_position_not_logit():
    """All targets saturate at 1.2: the first k targets are kept whatever their raw logits."""
    model, layer = pmod_layer("saturated_high")
    with torch.no_grad():
        layer.router.router.bias.fill_(100.0)  # every logit >= 55
    rotary = model.model.rotary_emb
    h, target, mask = padded_batch("right", "random", model.config.hidden_size)
    ctx = ModForwardContext(routable=target, attention_mask=mask)
    positions = torch.arange(WIDTH).unsqueeze(0)
    with torch.no_grad():
        layer(h, position_embeddings=rotary(h, positions), mod_context=ctx)
    keep = ctx.stats[1].keep
    for b, (before, n, _) in enumerate(ROWS):
        k = int(np.trunc(np.float32(n) * np.float32(RETENTION)))
        assert keep[b, before:before + n].tolist() == [True] * k + [False] * (n - k)


def test_bf16_keep_mask_equals_official_bf16_formula():
    """In bf16 the router and TanhNorm run in bf16 (as the official nn.Linear does), so many tokens tie."""
    model, layer = pmod_layer("random")
    layer = layer.to(torch.bfloat16)
    rotary = model.model.rotary_emb
    h, target, mask = padded_batch("left", "random", model.config.hidden_size)
    h = h.to(torch.bfloat16)
    ctx = ModForwardContext(routable=target, attention_mask=mask)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        layer(h, position_embeddings=rotary(h, positions), mod_context=ctx)
        linear = layer.router.router
        ties = 0
        for b in range(len(ROWS)):
            real, row_target = mask[b].bool(), target[b, mask[b].bool()]
            logit = torch.nn.functional.linear(h[b, real], linear.weight, linear.bias)[:, 0]
            s = torch.tanh(logit.masked_fill(~row_target, float("-inf"))) * 0.2 + 1.0
            assert s.dtype == torch.bfloat16
            k = int(np.trunc(np.float32(int(row_target.sum())) * np.float32(RETENTION)))
            chosen = official_top_k(s, k)
            expected = torch.tensor([(i in chosen) or not row_target[i] for i in range(len(s))])
            assert torch.equal(ctx.stats[1].keep[b, real], expected)
            ties += len(s[row_target]) - len(torch.unique(s[row_target]))
    assert ties > 0, "the bf16 case must exercise ties"


# -- official config and state-dict layout ---------------------------------------------------------------
OFFICIAL_CONFIG = {  # scripts/train/finetune_eval_7b_pmod_llava_1_5.sh
    "mod_target_layers": "shiftedcos_decay_0.85_0.15", "mod_target_token_type": "vision_all",
    "mod_router_factor": 0.5, "mod_weight_norm": "tanh_0.2_1", "mod_bias_enabled": True, "mod_special_init": True,
}


def test_official_config_translates_to_the_same_layers_and_ratios():
    from gamma_mod.mod.convert import pmod_config_from_official

    mod = pmod_config_from_official(OFFICIAL_CONFIG, 32)
    assert mod.strategy == "pmod" and not mod.shared_router and mod.pmod_alpha == 0.2
    assert mod.mod_layers_idx == list(range(8, 32))
    assert all(1.0 - mod.layer_skip_ratio(i) == pytest.approx(official_ratio(i), abs=1e-15) for i in range(8, 32))
    # The official divides by 31 at any depth: 16 layers -> layers 8-15 with the 32-layer ratios.
    short = pmod_config_from_official(OFFICIAL_CONFIG, 16)
    assert short.mod_layers_idx == list(range(8, 16))
    assert 1.0 - short.layer_skip_ratio(8) == pytest.approx(0.8444834595378433, abs=1e-15)
    fixed = pmod_config_from_official({**OFFICIAL_CONFIG, "mod_target_layers": "deep_all", "mod_router_factor": 0.3}, 6)
    assert fixed.mod_layers_idx == [2, 3, 4] and all(fixed.layer_skip_ratio(i) == pytest.approx(0.7) for i in (2, 3, 4))
    for bad, match in [({"mod_target_token_type": "all"}, "vision_all"), ({"mod_weight_norm": "sigmoid"}, "tanh"),
                       ({"mod_bias_enabled": False}, "bias"), ({"mod_target_layers": "every_other"}, "mod_target_layers")]:
        with pytest.raises(ValueError, match=match):
            pmod_config_from_official({**OFFICIAL_CONFIG, **bad}, 32)


def test_official_state_dict_layout_round_trip():
    from gamma_mod.mod.convert import pmod_state_dict_from_official, pmod_state_dict_to_official

    model, layer = pmod_layer("random")
    ours = model.state_dict()
    official = pmod_state_dict_to_official(ours, [1])
    assert "model.layers.1.decoder_layer.self_attn.q_proj.weight" in official
    assert "model.layers.1.router.router.weight" in official and "model.layers.1.router.router.bias" in official
    assert "model.layers.2.self_attn.q_proj.weight" in official and "model.layers.10.mlp.up_proj.weight" not in official
    back = pmod_state_dict_from_official(official, [1])
    assert back.keys() == ours.keys() and all(back[k] is ours[k] for k in ours)
    fresh, _ = pmod_layer("saturated_high")
    fresh.load_state_dict(back, strict=True)
    assert torch.equal(fresh.model.layers[1].router.router.bias, layer.router.router.bias)
