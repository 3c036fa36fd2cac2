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


def test_prd_options_shiftedlinear_average_ratio_and_official_divisor():
    # shiftedlinear: r(l) = (-l / 31 + 0.5) + 0.5; layer 4 = 0.871 stays dense, layer 5 = 0.839 is MoD.
    linear = prd_retention(32, schedule="shiftedlinear")
    assert min(linear) == 5 and linear[5] == (-5 / 31 + 0.5) + 0.5 and linear[26] == pytest.approx(0.1613, abs=1e-4)
    assert linear[27] == 0.15
    # Average ratio (official mod_router_factor) shifts the curve: 0.4 -> layer 5 = cos(5 pi / 31) / 2 + 0.4 = 0.837.
    shifted = prd_retention(32, average_ratio=0.4)
    assert min(shifted) == 5 and shifted[5] == math.cos(5 * math.pi / 31) / 2 + 0.4
    # Depth 16: ours divides by 15; the official form divides by 31 whatever the depth.
    assert prd_retention(16)[4] == math.cos(4 * math.pi / 15) / 2 + 0.5
    official = prd_retention(16, divisor=31)
    assert min(official) == 8 and official[8] == math.cos(8 * math.pi / 31) / 2 + 0.5 and max(official) == 15
    with pytest.raises(ValueError, match="prd_schedule"):
        ModConfig(strategy="pmod", prd_schedule="cosine")


def test_prd_config_fields_pick_the_layers():
    from gamma_mod.model import LlavaLlamaForCausalLM

    config = tiny_config(num_hidden_layers=16, hidden_size=16, intermediate_size=32, num_attention_heads=2,
                         num_key_value_heads=1)
    model = convert_to_mod(LlavaLlamaForCausalLM(config), None, strategy="pmod", prd_divisor=31,
                           prd_schedule="shiftedlinear", prd_average_ratio=0.45)
    mod = model.config.mod_config()
    expected = {i: max((-i / 31 + 0.5) + 0.45, 0.15) for i in range(16) if (-i / 31 + 0.5) + 0.45 <= 0.85}
    assert mod.mod_layers_idx == sorted(expected) == list(range(4, 16))
    assert all(1.0 - mod.layer_skip_ratio(i) == pytest.approx(r, abs=1e-12) for i, r in expected.items())


def test_tanhnorm_bounds():
    strategy = PModStrategy(ModConfig(strategy="pmod", pmod_alpha=0.2))
    logits = torch.randn(1000) * 50
    w = strategy.tanh_norm(logits)
    assert (w >= 0.8).all() and (w <= 1.2).all()
    assert strategy.tanh_norm(torch.zeros(3)).eq(1.0).all()
    # Saturation gives exactly the fp32 value of 1.2 (the ties the official top-k breaks by position).
    assert strategy.tanh_norm(torch.tensor([30.0, 50.0])).eq(torch.tensor(1.2)).all()


def test_router_is_official_per_layer_zero_init_linear_with_bias(tiny_model, tmp_path):
    from safetensors import safe_open

    from gamma_mod.model import LlavaLlamaForCausalLM

    mod = convert_to_mod(copy.deepcopy(tiny_model), [1, 2], strategy="pmod").eval()
    assert mod.config.mod_config().shared_router is False
    assert mod.model.layers[1].router is not mod.model.layers[2].router
    names = {k: tuple(v.shape) for k, v in mod.state_dict().items() if "router" in k}
    assert names == {"model.layers.1.router.router.weight": (1, 64), "model.layers.1.router.router.bias": (1,),
                     "model.layers.2.router.router.weight": (1, 64), "model.layers.2.router.router.bias": (1,)}
    assert all(v.eq(0).all() for k, v in mod.state_dict().items() if "router" in k)
    # A model built from the config (weight init through the model) starts at zero too.
    fresh = LlavaLlamaForCausalLM(mod.config)
    assert fresh.model.layers[1].router.router.weight.eq(0).all() and fresh.model.layers[1].router.router.bias.eq(0).all()

    with torch.no_grad():
        for i in (1, 2):
            mod.model.layers[i].router.router.weight.normal_(std=0.3)
            mod.model.layers[i].router.router.bias.fill_(0.1 * i)
    mod.save_pretrained(tmp_path)
    with safe_open(tmp_path / "model.safetensors", "pt") as f:
        assert sorted(k for k in f.keys() if "router" in k) == sorted(names)
    loaded = LlavaLlamaForCausalLM.from_pretrained(tmp_path).eval()
    for i in (1, 2):
        assert torch.equal(loaded.model.layers[i].router.router.bias, mod.model.layers[i].router.router.bias)
    ids, mask, pixels = multimodal_batch()
    with torch.no_grad():
        a = mod(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits
        b = loaded(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits
    assert torch.equal(a, b)


def test_shared_router_option_saves_and_loads(tiny_model, tmp_path):
    from gamma_mod.model import LlavaLlamaForCausalLM

    mod = convert_to_mod(copy.deepcopy(tiny_model), [1, 2], strategy="pmod", shared_router=True).eval()
    assert mod.model.layers[1].router is mod.model.layers[2].router
    with torch.no_grad():
        mod.model.layers[1].router.router.weight.normal_(std=0.3)
        mod.model.layers[1].router.router.bias.fill_(0.7)
    mod.save_pretrained(tmp_path)
    loaded = LlavaLlamaForCausalLM.from_pretrained(tmp_path)
    assert loaded.model.layers[1].router is loaded.model.layers[2].router
    assert torch.equal(loaded.model.layers[2].router.router.bias, torch.tensor([0.7]))
    assert torch.equal(loaded.model.layers[2].router.router.weight, mod.model.layers[1].router.router.weight)


def test_no_routing_loss_under_pmod(tiny_model):
    mod = convert_to_mod(copy.deepcopy(tiny_model), [1, 2], strategy="pmod").train()
    with torch.no_grad():
        mod.model.layers[1].router.router.weight.normal_(std=0.3)
    ids, mask, pixels = multimodal_batch()
    labels = ids.masked_fill(ids == IMAGE_TOKEN, -100).masked_fill(mask == 0, -100)
    out = mod(input_ids=ids, attention_mask=mask, pixel_values=pixels, labels=labels)
    assert out.routing_loss is None and torch.equal(out.loss, out.lm_loss)
    out.loss.backward()
    # The router learns through the TanhNorm weights alone.
    assert mod.model.layers[1].router.router.weight.grad.abs().sum() > 0
    assert mod.model.layers[1].router.router.bias.grad.abs().sum() > 0


def test_zero_init_router_keeps_dense_output(tiny_model):
    """Zero router: w = 1 for every token, so with nothing skipped the model IS the dense model."""
    mod = convert_to_mod(copy.deepcopy(tiny_model), [1, 2, 3], skip_ratio=0.0, strategy="pmod",
                         layer_skip_ratios={1: 0.0, 2: 0.0, 3: 0.0}).eval()
    assert mod.model.layers[1].router.router.weight.abs().sum() == 0
    ids, mask, pixels = multimodal_batch()
    with torch.no_grad():
        a = mod(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits
        b = tiny_model(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits
    assert (a - b)[mask.bool()].abs().max() < 1e-5


def test_string_kept_and_skipped_branches(tiny_model):
    mod = convert_to_mod(copy.deepcopy(tiny_model), [1], skip_ratio=0.5, strategy="pmod",
                         layer_skip_ratios={1: 0.5}).eval()
    layer = mod.model.layers[1]
    torch.nn.init.normal_(layer.router.router.weight, std=0.3)
    torch.nn.init.normal_(layer.router.router.bias, std=0.3)
    torch.manual_seed(0)
    T = 10
    h = torch.randn(1, T, 64)
    vision = torch.zeros(1, T, dtype=torch.bool)
    vision[0, 2:8] = True  # 6 vision tokens: 3 kept, 3 skipped
    cos_sin = mod.model.rotary_emb(h, torch.arange(T).unsqueeze(0))
    out = layer(h, position_embeddings=cos_sin, mod_context=ModForwardContext(routable=vision))
    r = h @ layer.router.router.weight[0] + layer.router.router.bias  # p-MoD routes on the raw hidden state
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
    per_row = (ids == IMAGE_TOKEN).sum(dim=1).tolist()
    for layer_idx, (routable, skipped) in mod.last_routing_stats.items():
        assert routable == sum(per_row)
        retention = 1.0 - mod.model.layers[layer_idx].mod.layer_skip_ratio(layer_idx)
        assert skipped == sum(n - math.trunc(n * retention) for n in per_row)  # official k = trunc(n * r)


def test_pmod_conversion_without_arank_uses_prd(tiny_model):
    config = tiny_config(num_hidden_layers=8)
    from gamma_mod.model import LlavaLlamaForCausalLM

    model = convert_to_mod(LlavaLlamaForCausalLM(config), None, strategy="pmod")
    mod = model.config.mod_config()
    assert mod.mod_layers_idx == sorted(prd_retention(8))
    assert mod.layer_skip_ratios[2] == pytest.approx(1 - prd_retention(8)[2])
    with pytest.raises(ValueError, match="needs `layers`"):
        convert_to_mod(LlavaLlamaForCausalLM(config), None)


def test_folder_with_the_old_two_logit_router_is_an_error(tiny_model, tmp_path):
    from safetensors.torch import load_file, save_file

    from gamma_mod.model import LlavaLlamaForCausalLM

    convert_to_mod(copy.deepcopy(tiny_model), [1], strategy="pmod").save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    state = {k: v for k, v in state.items() if ".router." not in k}
    state["model.layers.1.router.weight"] = torch.zeros(2, 64)  # our earlier p-MoD router layout
    save_file(state, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"router tensors \['model.layers.1.router.weight'\].*pmod"):
        LlavaLlamaForCausalLM.from_pretrained(tmp_path)
