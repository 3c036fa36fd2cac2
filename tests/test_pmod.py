"""p-MoD strategy: zero-init router, TanhNorm, STRing, progressive ratio decay."""

import copy
import math

import pytest
import torch
from transformers.models.llama.modeling_llama import LlamaDecoderLayer

from gamma_mod.mod.config import ModConfig
from gamma_mod.mod.convert import convert_to_mod
from gamma_mod.mod.layer import ModForwardContext
from gamma_mod.mod.strategies import PModStrategy, prd_retention

from conftest import IMAGE_TOKEN, multimodal_batch, tiny_config


def test_prd_schedule_on_32_layers():
    retention = prd_retention(32)
    assert min(retention) == 8, "layers 0-7 stay dense (r > 0.85)"
    assert retention[8] == pytest.approx(0.5 + 0.5 * math.cos(math.pi * 8 / 31))
    assert round(retention[8], 3) == 0.844
    values = [retention[i] for i in range(8, 32)]
    assert all(a >= b for a, b in zip(values, values[1:])), "monotonically decreasing"
    assert retention[23] > 0.15 and retention[24] == 0.15 and retention[31] == 0.15


def test_prd_uses_model_depth():
    r = prd_retention(8)
    # cos schedule over L-1 = 7 steps: r(1) = 0.5 + 0.5 cos(pi/7) = 0.950 (dense), r(2) = 0.811
    assert min(r) == 2 and r[2] == pytest.approx(0.5 + 0.5 * math.cos(2 * math.pi / 7))


def test_tanhnorm_bounds():
    strategy = PModStrategy(ModConfig(strategy="pmod", pmod_alpha=0.2))
    logits = torch.randn(1000, 2) * 50
    w = strategy.tanh_norm(logits)
    assert (w >= 0.8).all() and (w <= 1.2).all()
    assert strategy.tanh_norm(torch.zeros(3, 2)).eq(1.0).all()


def test_zero_init_router_keeps_dense_output(tiny_model):
    """Zero router: w = 1 for every token, so with nothing skipped the model IS the dense model."""
    mod = convert_to_mod(copy.deepcopy(tiny_model), [1, 2, 3], routing_ratio=0.0, strategy="pmod",
                         layer_capacity={1: 0.0, 2: 0.0, 3: 0.0}).eval()
    assert mod.model.layers[1].router.weight.abs().sum() == 0
    ids, mask, pixels = multimodal_batch()
    with torch.no_grad():
        a = mod(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits
        b = tiny_model(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits
    assert (a - b)[mask.bool()].abs().max() < 1e-5


def test_string_kept_and_skipped_branches(tiny_model):
    mod = convert_to_mod(copy.deepcopy(tiny_model), [1], routing_ratio=0.5, strategy="pmod",
                         layer_capacity={1: 0.5}).eval()
    layer = mod.model.layers[1]
    torch.nn.init.normal_(layer.router.weight, std=0.3)
    torch.manual_seed(0)
    T = 10
    h = torch.randn(1, T, 64)
    vision = torch.zeros(1, T, dtype=torch.bool)
    vision[0, 2:8] = True  # 6 vision tokens: 3 kept, 3 skipped
    cos_sin = mod.model.rotary_emb(h, torch.arange(T).unsqueeze(0))
    out = layer(h, position_embeddings=cos_sin, mod_context=ModForwardContext(routable=vision))
    logits = h @ layer.router.weight.T  # p-MoD routes on the raw hidden state
    r = logits[..., 1] - logits[..., 0]
    w = 0.2 * torch.tanh(r) + 1
    keep = torch.ones(T, dtype=torch.bool)
    vis_idx = torch.arange(2, 8)
    keep[vis_idx[r[0, vis_idx].argsort(descending=True)[3:]]] = False
    dense = LlamaDecoderLayer(mod.config, 1)
    dense.load_state_dict({k: v for k, v in layer.state_dict().items() if not k.startswith("router.")})
    kept = keep.nonzero().squeeze(1)
    hk = h[:, kept]
    attn, _ = dense.self_attn(dense.input_layernorm(hk), position_embeddings=mod.model.rotary_emb(h, kept.unsqueeze(0)))
    h1 = hk + attn
    weight = torch.where(vision[0, kept], w[0, kept], torch.ones_like(w[0, kept])).unsqueeze(-1)
    expected_kept = h1 + weight * dense.mlp(dense.post_attention_layernorm(h1))
    assert (out[0, kept] - expected_kept[0]).abs().max() < 1e-5
    skipped = (~keep).nonzero().squeeze(1)
    assert torch.allclose(out[0, skipped], h[0, skipped] * w[0, skipped].unsqueeze(-1), atol=1e-6)


def test_pmod_routes_vision_tokens_only(tiny_model):
    mod = convert_to_mod(copy.deepcopy(tiny_model), None, strategy="pmod").eval()
    ids, mask, pixels = multimodal_batch()
    with torch.no_grad():
        mod(input_ids=ids, attention_mask=mask, pixel_values=pixels)
    n_vision = int((ids == IMAGE_TOKEN).sum())
    for layer_idx, (routable, skipped) in mod.last_routing_stats.items():
        assert routable == n_vision
        ratio = mod.model.layers[layer_idx].mod.skip_ratio(layer_idx)
        assert skipped == 2 * int(ratio * n_vision / 2)


def test_pmod_conversion_without_arank_uses_prd(tiny_model):
    config = tiny_config(num_hidden_layers=8)
    from gamma_mod.model import LlavaLlamaForCausalLM

    model = convert_to_mod(LlavaLlamaForCausalLM(config), None, strategy="pmod")
    mod = model.config.mod_config()
    assert mod.mod_layers_idx == sorted(prd_retention(8))
    assert mod.layer_capacity[2] == pytest.approx(1 - prd_retention(8)[2])
    with pytest.raises(ValueError, match="needs `layers`"):
        convert_to_mod(LlavaLlamaForCausalLM(config), None)
