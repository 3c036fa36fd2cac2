"""MoD on the Hugging Face families (gamma_mod/families): llava-hf, LLaVA-OneVision, Qwen2.5-VL, Qwen3-VL.

Each family's tiny twin is built from its own transformers config class (tests/family_tiny.py). References
are the unconverted transformers model itself (skip 0), the family's own dense decoder layer run on the kept
tokens at their original positions (skip 0.5), eager attention probabilities (ARank), and token counts
derived by hand from the prompts.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from family_tiny import (
    FAMILIES,
    IMAGE,
    PAD,
    VIDEO,
    VIDEO_FAMILIES,
    batch,
    image_sample,
    tiny_model,
    video_sample,
)
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, DynamicCache

import gamma_mod  # noqa: F401  (registers the twins)
from gamma_mod.arank.capture import capture_attention
from gamma_mod.families import FAMILIES as ADAPTERS
from gamma_mod.families import UnknownFamilyError, get_family, load_family_model, mod_twin_classes
from gamma_mod.mod.config import ModConfigError
from gamma_mod.mod.convert import convert_to_mod
from gamma_mod.mod.layer import _SdpaForFlashConfig, is_mod_layer

GEN = dict(max_new_tokens=4, do_sample=False, pad_token_id=PAD)


def n_routable(ids: list[int]) -> int:
    """System prompt + media tokens: every token up to the last image/video placeholder."""
    return max(i for i, t in enumerate(ids) if t in (IMAGE, VIDEO)) + 1


def two_image_samples(family: str):
    """Two prompts whose images give different token counts (llava-hf has one image size: the prompts
    differ in length instead, so left padding is exercised too)."""
    first, second = image_sample(family, 0, seed=1), image_sample(family, 1 if family != "llava_hf" else 0, seed=2)
    if family == "llava_hf":
        second.input_ids = second.input_ids + [5, 6, 7]
    return [first, second]


@pytest.fixture(scope="module", params=FAMILIES)
def family(request):
    return request.param


# -- (a) skip 0 == the unconverted model --------------------------------------------------------
def test_skip0_straight_through_equals_unconverted_hf_model(family):
    plain = tiny_model(family)
    samples = two_image_samples(family)
    mod = convert_to_mod(copy.deepcopy(plain), [1, 2], 0.0, router_weighting="straight_through")
    assert type(mod).__name__.startswith("GammaMod") and mod.mod_layer_indices == [1, 2]
    for inputs in (batch(family, samples[:1]), batch(family, samples, padding_side="left")):
        with torch.no_grad():
            expected = plain(**inputs).logits
            got = mod(**inputs).logits
        real = inputs["attention_mask"].bool()
        assert (got - expected)[real].abs().max() < 1e-5
    assert mod.last_routing_stats[1] == (sum(n_routable(s.input_ids) for s in samples), 0)


# -- (b) skip 0.5: the family's own layer on the kept tokens, generation, batches, cache -------------
def test_mod_layer_is_the_dense_layer_on_kept_tokens_at_original_positions(family):
    """A MoD layer's output at kept tokens == the family's dense layer run on the kept tokens alone with the
    rotary tables (M-RoPE for Qwen) gathered at their original positions; skipped tokens pass unchanged."""
    plain = tiny_model(family)
    dense_layer = copy.deepcopy(get_family(plain).decoder_layers(plain)[2])
    mod = convert_to_mod(plain, [1, 2], 0.5, router_weighting="straight_through")
    layer = get_family(mod).decoder_layers(mod)[2]
    seen = {}

    def grab(module, args, kwargs, output):
        seen.update(hidden=args[0] if args else kwargs["hidden_states"], cos_sin=kwargs["position_embeddings"],
                    out=output)

    handle = layer.register_forward_hook(grab, with_kwargs=True)
    with torch.no_grad():
        mod(**batch(family, [image_sample(family, 0, seed=3)]))
    handle.remove()
    assert mod.mod_context_holder.context is None  # cleared after the forward (the layers bound it)
    stats = mod.last_routing_stats._stats[2]
    kept = stats.keep[0].nonzero().squeeze(1)
    assert 0 < len(kept) < stats.keep.shape[1]
    hidden, (cos, sin) = seen["hidden"], seen["cos_sin"]
    width = len(kept)
    causal = torch.full((width, width), torch.finfo(hidden.dtype).min).triu(1)[None, None]
    with torch.no_grad():
        expected = dense_layer(hidden[:, kept], attention_mask=causal, position_ids=None,
                               position_embeddings=(cos[:, kept], sin[:, kept]))
    assert (seen["out"][:, kept] - expected).abs().max() < 1e-5
    skipped = (~stats.keep[0]).nonzero().squeeze(1)
    assert torch.equal(seen["out"][:, skipped], hidden[:, skipped])
    # Original positions matter: renumbering the kept tokens 0..K-1 gives a different output.
    if width > 1:
        with torch.no_grad():
            renumbered = dense_layer(hidden[:, kept], attention_mask=causal, position_ids=None,
                                     position_embeddings=(cos[:, :width], sin[:, :width]))
        assert (renumbered - expected).abs().max() > 1e-4


def test_generate_cache_batch_and_kv_cache_hold_only_kept_tokens(family):
    mod = convert_to_mod(tiny_model(family), [1, 2], 0.5)
    samples = two_image_samples(family)
    singles = []
    for sample in samples:
        inputs = batch(family, [sample])
        with_cache = mod.generate(**inputs, use_cache=True, **GEN)
        without = mod.generate(**inputs, use_cache=False, **GEN)
        assert torch.equal(with_cache, without)
        singles.append(with_cache[0, len(sample.input_ids):])
    counts = [n_routable(s.input_ids) for s in samples]
    if family != "llava_hf":
        assert counts[0] != counts[1]  # rows with different image-token counts in one batch
    inputs = batch(family, samples, padding_side="left")
    together = mod.generate(**inputs, use_cache=True, **GEN)
    width = inputs["input_ids"].shape[1]
    for row, single in enumerate(singles):
        assert torch.equal(together[row, width:], single)

    # The KV cache of a MoD layer holds only the tokens it kept: T - floor(0.5 * routable).
    sample = samples[0]
    length, kept = len(sample.input_ids), len(sample.input_ids) - n_routable(sample.input_ids) // 2
    cache = DynamicCache(config=mod.config.get_text_config(decoder=True))
    with torch.no_grad():
        out = mod(**batch(family, [sample]), cache=cache, use_cache=True)
    assert [layer.keys.shape[-2] for layer in out.cache.layers] == [length, kept, kept, length]


def test_routing_loss_joins_the_loss_and_trains_the_router(family):
    mod = convert_to_mod(tiny_model(family), [1, 2], 0.5).train()
    inputs = batch(family, [image_sample(family, 0, seed=4)])
    labels = inputs["input_ids"].clone()
    out = mod(**inputs, labels=labels)
    assert out.routing_loss is not None and out.lm_loss is not None
    assert torch.allclose(out.loss, out.lm_loss + 0.01 * out.routing_loss)
    out.loss.backward()
    router = mod.mod_layers()[0].router
    assert router is mod.mod_layers()[1].router  # one shared router
    assert router.weight.grad is not None and router.weight.grad.abs().sum() > 0


# -- (c) save / load -----------------------------------------------------------------------------
def test_plain_folder_converts_and_mod_round_trips_through_auto_classes(family, tmp_path):
    tiny_model(family).save_pretrained(tmp_path / "plain")
    plain = load_family_model(tmp_path / "plain")  # local files only
    assert type(plain).__name__ == get_family(family).hf_model_class_name
    mod = convert_to_mod(plain, [1, 2], 0.5)
    inputs = batch(family, two_image_samples(family), padding_side="left")
    with torch.no_grad():
        expected = mod(**inputs).logits
    mod.save_pretrained(tmp_path / "mod")
    config = json.loads((tmp_path / "mod" / "config.json").read_text())
    assert config["model_type"] == f"gamma_mod_{family.replace('_hf', '')}"
    assert config["mod"]["mod_layers_idx"] == [1, 2]
    with safe_open(str(tmp_path / "mod" / "model.safetensors"), framework="pt") as f:
        routers = sorted(k for k in f.keys() if ".router." in k)
    assert len(routers) == 2 and {k.split(".layers.")[1].split(".")[0] for k in routers} == {"1", "2"}
    for auto in (AutoModelForImageTextToText, AutoModelForCausalLM):
        loaded = auto.from_pretrained(tmp_path / "mod", local_files_only=True)
        assert isinstance(loaded, mod_twin_classes(family)[1]) and loaded.mod_layer_indices == [1, 2]
        assert loaded.mod_layers()[0].router is loaded.mod_layers()[1].router
        with torch.no_grad():
            assert (loaded(**inputs).logits - expected).abs().max() < 1e-6


def test_official_compat_is_refused_on_hf_families():
    with pytest.raises(ModConfigError, match="only for the LLaVA fork"):
        convert_to_mod(tiny_model("qwen2_5_vl"), [1, 2], 0.5, compat="official")
    model = convert_to_mod(tiny_model("qwen2_5_vl"), [1, 2], 0.5)
    with pytest.raises(ValueError, match="already has MoD layers"):
        convert_to_mod(model, [1], 0.5)


# -- (d) video ------------------------------------------------------------------------------------
@pytest.mark.parametrize("family_name", VIDEO_FAMILIES)
def test_video_tokens_are_routable(family_name):
    mod = convert_to_mod(tiny_model(family_name), [1, 2], 0.5)
    sample = video_sample(family_name, seed=5)
    inputs = batch(family_name, [sample])
    assert "pixel_values_videos" in inputs and (inputs["input_ids"] == VIDEO).any()
    with torch.no_grad():
        mod(**inputs)
    routable = n_routable(sample.input_ids)
    assert routable > 3  # the system prompt and the video tokens
    assert mod.last_routing_stats[1] == (routable, routable // 2)
    assert torch.equal(mod.generate(**inputs, use_cache=True, **GEN), mod.generate(**inputs, use_cache=False, **GEN))


# -- (e) ARank capture ----------------------------------------------------------------------------
def test_arank_capture_equals_eager_attention(family):
    """Captured maps == the eager attention probabilities of the family's own attention (Qwen3-VL: q/k
    norms; every tiny twin: grouped-query attention, 4 query heads over 2 key/value heads)."""
    model = tiny_model(family)
    model.set_attn_implementation("eager")
    inputs = batch(family, [image_sample(family, 0, seed=6)])
    maps = {}
    with torch.no_grad(), capture_attention(model, lambda layer, b, probs: maps.__setitem__((layer, b), probs)):
        out = model(**inputs, output_attentions=True, use_cache=False)
    assert sorted(maps) == [(i, 0) for i in range(4)]
    for i, attn in enumerate(out.attentions):
        assert maps[(i, 0)].shape == attn[0].shape
        assert (maps[(i, 0)] - attn[0].float()).abs().max() < 1e-5
    with pytest.raises(ValueError, match="already has MoD layers"):
        with capture_attention(convert_to_mod(model, [1], 0.5), lambda *a: None):
            pass


# -- the registry and adapters ---------------------------------------------------------------------
def test_get_family_by_name_model_type_config_and_model():
    model = tiny_model("qwen3_vl")
    adapter = get_family(model)
    assert adapter is get_family("qwen3_vl") is get_family(model.config) is get_family("gamma_mod_qwen3_vl")
    assert adapter.media_token_ids(model.config) == (IMAGE, VIDEO)
    assert get_family("llava_llama").name == "llava_fork" and get_family("mod_llava_llama").name == "llava_fork"
    assert get_family("llava").image_token_ids(tiny_model("llava_hf").config) == (IMAGE,)
    with pytest.raises(UnknownFamilyError, match="known families"):
        get_family("gpt2")
    vision = {id(p) for p in adapter.vision_parameters(model)}
    projector = {id(p) for p in adapter.projector_parameters(model)}
    assert vision and projector and not vision & projector  # the merger inside model.visual is the projector
    assert len(adapter.decoder_layers(model)) == 4
    assert set(ADAPTERS) == {"llava_fork", "llava_hf", "llava_onevision", "qwen2_5_vl", "qwen3_vl"}


def test_mod_layers_use_sdpa_where_the_model_uses_flash_attention():
    config = tiny_model("qwen3_vl").config.get_text_config(decoder=True)
    view = _SdpaForFlashConfig(config)
    for impl, expected in (("flash_attention_2", "sdpa"), ("eager", "eager"), ("sdpa", "sdpa")):
        config._attn_implementation_internal = impl
        assert view._attn_implementation == expected
    assert view.hidden_size == config.hidden_size
    mod = convert_to_mod(tiny_model("qwen3_vl"), [1], 0.5)
    layer = get_family(mod).decoder_layers(mod)[1]
    assert is_mod_layer(layer) and isinstance(layer.self_attn.config, _SdpaForFlashConfig)
    assert copy.deepcopy(mod).mod_layer_indices == [1]


def test_gradient_checkpointing_recompute_sees_the_forwards_context():
    """The holder's context is bound when a MoD layer is called, so the backward-pass recompute (after the
    model's forward has cleared the holder) routes exactly as the forward did."""
    mod = convert_to_mod(tiny_model("qwen3_vl"), [1, 2], 0.5).train()
    inputs = batch("qwen3_vl", [image_sample("qwen3_vl", 1, seed=7)])
    plain_run = mod(**inputs, labels=inputs["input_ids"])
    plain_run.loss.backward()
    expected = mod.mod_layers()[0].router.weight.grad.clone()
    mod.zero_grad()
    mod.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    checkpointed = mod(**inputs, labels=inputs["input_ids"], use_cache=False)
    checkpointed.loss.backward()
    assert torch.allclose(checkpointed.loss, plain_run.loss)
    assert torch.allclose(mod.mod_layers()[0].router.weight.grad, expected, atol=1e-6)
