"""MoD layers: equivalence with dense, positions, masking, routing loss, cache, checkpoints."""

import copy
import json
import warnings

import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM
from transformers.models.llama.modeling_llama import LlamaDecoderLayer

import gamma_mod  # noqa: F401
from gamma_mod.model import LlavaLlamaForCausalLM
from gamma_mod.mod.convert import convert_to_mod
from gamma_mod.mod.layer import MoDDecoderLayer, ModForwardContext
from gamma_mod.mod.routing import routable_token_mask, topk_keep_mask

from conftest import IMAGE_TOKEN, NUM_IMAGE_TOKENS, multimodal_batch, tiny_config

SYSTEM_LEN = 3


def mod_model(base, ratio=0.5, layers=(1, 2), **options):
    model = copy.deepcopy(base)
    return convert_to_mod(model, list(layers), skip_ratio=ratio, **options).eval()


def logits(model, ids, mask, pixels):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits


@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("options", [dict(ratio=0.0, router_weighting="straight_through"),
                                     dict(ratio=0.0, router_weighting="none"),
                                     dict(ratio=0.5, router_weighting="straight_through", mod_mode="dense")])
def test_all_tokens_kept_equals_dense(tiny_model, padding_side, options):
    ids, mask, pixels = multimodal_batch(batch=3, question_lengths=(4, 7, 5), padding_side=padding_side)
    options = dict(options)
    ratio = options.pop("ratio")
    mod = mod_model(tiny_model, ratio=ratio, **options)
    real = mask.bool()  # padding positions carry no meaning in either model
    diff = (logits(mod, ids, mask, pixels) - logits(tiny_model, ids, mask, pixels))[real].abs().max()
    assert diff < 1e-5
    assert all(skipped == 0 for _, skipped in mod.last_routing_stats.values())


def test_official_prob_weighting_scales_mlp_branch(tiny_model):
    """Kept tokens: h + attn; then + p * mlp. With nothing skipped, compare with a dense layer by hand."""
    mod = mod_model(tiny_model, ratio=0.0, layers=(1,), router_weighting="prob")
    layer: MoDDecoderLayer = mod.model.layers[1]
    torch.manual_seed(1)
    h = torch.randn(1, 6, 64)
    pos = torch.arange(6).unsqueeze(0)
    cos_sin = mod.model.rotary_emb(h, pos)
    ctx = ModForwardContext(routable=torch.ones(1, 6, dtype=torch.bool))
    out = layer(h, position_embeddings=cos_sin, mod_context=ctx)
    # Reference by hand with the same weights.
    dense = LlamaDecoderLayer(mod.config, 1)
    dense.load_state_dict({k: v for k, v in layer.state_dict().items() if not k.startswith("router.")})
    normed = layer.input_layernorm(h)
    attn, _ = dense.self_attn(normed, position_embeddings=cos_sin, attention_mask=None)
    h1 = h + attn
    p = torch.softmax(normed @ layer.router.weight.T, dim=-1)[..., 1:]
    expected = h1 + p * dense.mlp(dense.post_attention_layernorm(h1))
    assert (out - expected).abs().max() < 1e-5


def test_kept_tokens_use_original_positions(tiny_model):
    """A MoD layer equals a dense layer run on the kept tokens alone, at their ORIGINAL positions."""
    mod = mod_model(tiny_model, ratio=0.5, layers=(1,), router_weighting="none")
    layer: MoDDecoderLayer = mod.model.layers[1]
    torch.manual_seed(2)
    T = 12
    h = torch.randn(2, T, 64)
    pos = torch.arange(T).unsqueeze(0)
    cos, sin = mod.model.rotary_emb(h, pos)
    routable = torch.zeros(2, T, dtype=torch.bool)
    routable[:, 1:9] = True
    ctx = ModForwardContext(routable=routable)
    out = layer(h, position_embeddings=(cos, sin), mod_context=ctx)
    dense = LlamaDecoderLayer(mod.config, 1)
    dense.load_state_dict({k: v for k, v in layer.state_dict().items() if not k.startswith("router.")})
    score = torch.softmax(layer.input_layernorm(h) @ layer.router.weight.T, dim=-1)[..., 1]
    for b in range(2):
        keep = topk_keep_mask(score[b:b + 1], routable[b:b + 1], 0.5)[0]
        assert int((routable[b] & ~keep).sum()) == 4
        kept = keep.nonzero().squeeze(1)
        positions = kept.unsqueeze(0)  # original positions, NOT 0..k-1
        ref = dense(h[b:b + 1, kept], position_embeddings=mod.model.rotary_emb(h, positions), attention_mask=None)
        assert (out[b, kept] - ref[0]).abs().max() < 1e-5
        skipped = (~keep).nonzero().squeeze(1)
        assert torch.equal(out[b, skipped], h[b, skipped])
        # Renumbering positions would give a different answer: the test can tell.
        renumbered = dense(h[b:b + 1, kept], position_embeddings=mod.model.rotary_emb(h, torch.arange(len(kept)).unsqueeze(0)))
        assert (out[b, kept] - renumbered[0]).abs().max() > 1e-4


def test_routable_mask_is_system_prompt_and_image():
    ids, mask, _ = multimodal_batch(batch=2, question_lengths=(4, 6))
    routable = routable_token_mask(ids, mask, IMAGE_TOKEN)
    for b in range(2):
        expected = torch.zeros(ids.shape[1], dtype=torch.bool)
        expected[: 1 + SYSTEM_LEN + NUM_IMAGE_TOKENS] = True
        assert torch.equal(routable[b], expected)
    text_only = torch.tensor([[1, 9, 9, 9]])
    assert not routable_token_mask(text_only, None, IMAGE_TOKEN).any()


def test_skip_count_and_masked_tokens_never_skipped(tiny_model):
    mod = mod_model(tiny_model, ratio=0.5)
    ids, mask, pixels = multimodal_batch(batch=2, question_lengths=(4, 6))
    routable = routable_token_mask(ids, mask, IMAGE_TOKEN)
    seen = {}

    def capture(module, args, kwargs, output):
        seen[module.layer_idx] = (args[0], output)

    hooks = [layer.register_forward_hook(capture, with_kwargs=True) for layer in mod.model.layers[1:3]]
    logits(mod, ids, mask, pixels)
    for h in hooks:
        h.remove()
    n_routable = 1 + SYSTEM_LEN + NUM_IMAGE_TOKENS  # 20 per row
    for idx, (routable_count, skipped) in mod.last_routing_stats.items():
        assert routable_count == 2 * n_routable
        assert skipped == 2 * int(0.5 * n_routable)
        before, after = seen[idx]
        unchanged = (before == after).all(dim=-1)  # skipped tokens pass through untouched
        assert not (unchanged & ~routable).any(), "a question/answer/padding token was skipped"
        assert int((unchanged & routable).sum()) == skipped


def test_routing_loss_is_ce_over_routable_tokens_only(tiny_model):
    mod = mod_model(tiny_model, ratio=0.5, layers=(1,))
    layer = mod.model.layers[1]
    torch.manual_seed(3)
    h = torch.randn(1, 8, 64)
    routable = torch.tensor([[True] * 4 + [False] * 4])
    cos_sin = mod.model.rotary_emb(h, torch.arange(8).unsqueeze(0))
    ctx = ModForwardContext(routable=routable)
    layer(h, position_embeddings=cos_sin, mod_context=ctx)
    logits_ = layer.input_layernorm(h) @ layer.router.weight.T  # (1, 8, 2)
    p = torch.softmax(logits_, dim=-1)[0, :4, 1]
    keep = torch.zeros(4, dtype=torch.long)
    keep[p.argsort(descending=True)[:2]] = 1
    expected = torch.nn.functional.cross_entropy(logits_[0, :4], keep)
    assert torch.allclose(ctx.stats[1].loss, expected, atol=1e-6)
    # Scores of non-routable tokens do not enter the loss at all.
    h2 = h.clone()
    h2[0, 4:] = torch.randn(4, 64)
    ctx2 = ModForwardContext(routable=routable)
    layer(h2, position_embeddings=cos_sin, mod_context=ctx2)
    assert torch.allclose(ctx2.stats[1].loss, ctx.stats[1].loss)


def test_gradients_reach_the_shared_router(tiny_model):
    mod = mod_model(tiny_model, ratio=0.5).train()
    ids, mask, pixels = multimodal_batch()
    labels = ids.masked_fill(ids == IMAGE_TOKEN, -100).masked_fill(mask == 0, -100)
    out = mod(input_ids=ids, attention_mask=mask, pixel_values=pixels, labels=labels)
    assert out.routing_loss is not None and out.routing_loss > 0
    assert torch.allclose(out.loss, out.lm_loss + 0.01 * out.routing_loss)
    out.loss.backward()
    router = mod.model.layers[1].router
    assert router is mod.model.layers[2].router, "one router shared by all MoD layers"
    assert router.weight.grad is not None and router.weight.grad.abs().sum() > 0
    n_router_params = sum(1 for name, _ in mod.named_parameters() if "router" in name)
    assert n_router_params == 1


def test_per_layer_routers_option(tiny_model):
    mod = mod_model(tiny_model, shared_router=False)
    assert mod.model.layers[1].router is not mod.model.layers[2].router
    assert sum(1 for name, _ in mod.named_parameters() if "router" in name) == 2


@pytest.mark.parametrize("mode", [dict(), dict(prefill="threshold", decode="threshold")])
@pytest.mark.parametrize("strategy", ["gamma", "pmod"])
def test_generation_with_cache_equals_without(tiny_model, mode, strategy):
    mod = mod_model(tiny_model, ratio=0.5, strategy=strategy, **mode)
    if strategy == "pmod":  # a trained p-MoD router is not zero; make routing non-trivial
        torch.nn.init.normal_(next(mod.model.layers[1].router.parameters()), std=0.5)
    ids, mask, pixels = multimodal_batch(batch=2, padding_side="left")
    kwargs = dict(input_ids=ids, attention_mask=mask, pixel_values=pixels, max_new_tokens=8, do_sample=False)
    with_cache = mod.generate(**kwargs)
    without = mod.generate(**kwargs, use_cache=False)
    assert torch.equal(with_cache, without)


def test_mod_kv_cache_holds_only_kept_tokens(tiny_model):
    mod = mod_model(tiny_model, ratio=0.5)
    ids, mask, pixels = multimodal_batch(batch=1, question_lengths=(4,))
    with torch.no_grad():
        out = mod(input_ids=ids, attention_mask=mask, pixel_values=pixels, use_cache=True)
    cache = out.cache
    total = ids.shape[1]
    skipped = int(0.5 * (1 + SYSTEM_LEN + NUM_IMAGE_TOKENS))
    assert cache.get_seq_length(0) == total
    assert cache.get_seq_length(1) == total - skipped
    assert cache.get_seq_length(3) == total


def test_mod_save_load_identical_logits_and_official_keys(tiny_model, tmp_path):
    mod = mod_model(tiny_model, ratio=0.34)
    mod.save_pretrained(tmp_path)
    from safetensors import safe_open

    with safe_open(tmp_path / "model.safetensors", "pt") as f:
        router_keys = sorted(k for k in f.keys() if "router" in k)
    assert router_keys == ["model.layers.1.router.weight", "model.layers.2.router.weight"]
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["mod"]["mod_layers_idx"] == [1, 2] and config["mod"]["skip_ratio"] == 0.34
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert isinstance(loaded.model.layers[1], MoDDecoderLayer)
    assert loaded.model.layers[1].router is loaded.model.layers[2].router
    ids, mask, pixels = multimodal_batch()
    assert torch.equal(logits(mod, ids, mask, pixels), logits(loaded, ids, mask, pixels))


def test_load_official_checkpoint_layout(tiny_model, tmp_path):
    """config.json with `model_type: mod_llava_llama` and the flat official mod fields; per-layer router copies."""
    mod = mod_model(tiny_model, ratio=0.5)
    state = {k: v.clone().contiguous() for k, v in mod.state_dict().items()}
    different = torch.randn(2, 64)
    state["model.layers.2.router.weight"] = different  # copies that disagree
    save_file(state, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    config = mod.config.to_dict()
    config.pop("mod")
    config.update(model_type="mod_llava_llama", mod_enable=True, mod_mode="sparse", mod_layers_idx=[1, 2],
                  capacity_factor=0.5, router_aux_loss_coef=0.01)
    (tmp_path / "config.json").write_text(json.dumps(config))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert any("router copies differ" in str(w.message) for w in caught)
    assert torch.equal(loaded.model.layers[2].router.weight, state["model.layers.1.router.weight"])
    assert [i for i, l in enumerate(loaded.model.layers) if isinstance(l, MoDDecoderLayer)] == [1, 2]


def test_convert_rejects_layer_zero_and_bad_ratio(tiny_model):
    with pytest.raises(ValueError, match="layer 0"):
        mod_model(tiny_model, layers=(0, 1))
    with pytest.raises(ValueError, match="skip_ratio"):
        mod_model(tiny_model, ratio=1.0)
