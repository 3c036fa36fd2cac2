"""`mod.compat: official`: the released gamma-MoD code's rules, pinned to hand-derived expectations.

Rules (gamma_mod/mod/compat.py): renumbered positions 0..k-1 (decode: the layer's kept-cache length),
fixed routable region (first R positions; nothing skipped when T <= R), threshold prefill over ALL tokens,
decode skip on batch row 0, routing loss over all B x T tokens. References below are built from the
layer's own Llama sub-modules run on the kept tokens as a plain causal sequence, never from our
gather/scatter/mask code.
"""

import copy
import json
import logging
import math

import pytest
import torch
from transformers import AutoModelForCausalLM
from transformers.cache_utils import DynamicCache

import gamma_mod  # noqa: F401
from gamma_mod.mod.compat import keep_top_with_priority, official_train_kept_count, official_train_keep
from gamma_mod.mod.config import OFFICIAL_MOD_MODES, ModConfig, ModConfigError
from gamma_mod.mod.convert import convert_to_mod
from gamma_mod.mod.layer import ModForwardContext
from gamma_mod.model.builder import build_config
from gamma_mod.model.configuration import load_config

from conftest import IMAGE_TOKEN, NUM_IMAGE_TOKENS, multimodal_batch

HIDDEN = 64
SKIP, KEEP = -10.0, 10.0  # values of hidden dim 0 that give p ~ 0 / p ~ 1 with `steer_router`


# -- helpers ---------------------------------------------------------------------------------------------
def official(base, layers=(1, 2), **options):
    model = copy.deepcopy(base)
    return convert_to_mod(model, list(layers), skip_ratio=0.5, compat="official", **options).eval()


def steer_router(layer, scale=5.0):
    """Router logits (0, scale * normed[..., 0]): p = sigmoid(scale * normed0), monotone in hidden dim 0.
    Also sharpens the layer's attention (q, k x 8) so that RoPE positions visibly change its output."""
    with torch.no_grad():
        layer.router.weight.zero_()
        layer.router.weight[1, 0] = scale
        layer.self_attn.q_proj.weight.mul_(8)
        layer.self_attn.k_proj.weight.mul_(8)


def hidden(dim0, seed=0):
    """(B, T, C): small random values, dim 0 set per token (so p's order is dim 0's order)."""
    dim0 = torch.as_tensor(dim0, dtype=torch.float32)
    dim0 = dim0.unsqueeze(0) if dim0.dim() == 1 else dim0
    h = 0.5 * torch.randn(*dim0.shape, HIDDEN, generator=torch.Generator().manual_seed(seed))
    h[..., 0] = dim0
    return h


def context(model, batch, seq, **kw):
    return ModForwardContext(routable=kw.pop("routable", torch.zeros(batch, seq, dtype=torch.bool)),
                             rotary=model.model.rotary_emb, **kw)


def run_layer(model, layer, h, ctx, cache=None, start=0):
    pos = torch.arange(start, start + h.shape[1]).unsqueeze(0)
    return layer(h, position_embeddings=model.model.rotary_emb(h, pos), mod_context=ctx, cache=cache)


def reference(model, layer, h_kept, positions):
    """The layer on the kept tokens alone, as a plain causal sequence at `positions`: h + attn; + p * mlp."""
    k = h_kept.shape[1]
    normed = layer.input_layernorm(h_kept)
    p = layer.router(normed).softmax(-1)[..., 1]
    cos_sin = model.model.rotary_emb(h_kept, torch.as_tensor(positions).view(1, k))
    causal = torch.full((k, k), torch.finfo(h_kept.dtype).min).triu(1).view(1, 1, k, k)
    attn, _ = layer.self_attn(normed, position_embeddings=cos_sin, attention_mask=causal)
    out = h_kept + attn
    return out + p.unsqueeze(-1) * layer.mlp(layer.post_attention_layernorm(out))


# -- config: mod_mode values, layer choice, compat selection ------------------------------------------
@pytest.mark.parametrize("mode", OFFICIAL_MOD_MODES + (True,))
def test_every_official_mod_mode_loads(mode):
    mod = ModConfig(mod_mode=mode, mod_layers_idx=[1, 2]).resolve(8)
    assert mod.mod_layers_idx == [1, 2]  # an explicit list always wins
    assert mod.official == (mode not in ("sparse", "dense"))


def test_layer_choice_implied_when_mod_layers_idx_is_absent():
    # The official initialize_mod_modules, for 8 and 32 layers, written out.
    expected_8 = {"arank_mod": [3, 4, 5, 6], "second_half": [4, 5, 6], "first_last_dense": [1, 2, 3, 4, 5, 6],
                  "last_two_thirds": [4, 5, 6], "first_five_dense": [5, 6]}
    for mode, layers in expected_8.items():
        assert ModConfig(mod_mode=mode).resolve(8).mod_layers_idx == layers, mode
    assert ModConfig(mod_mode="arank_mod").resolve(32).mod_layers_idx == list(range(3, 31))  # 28 MoD layers
    assert ModConfig(mod_mode="last_two_thirds").resolve(32).mod_layers_idx == list(range(12, 31))
    # Ours: sparse without layers is a model without MoD layers (unchanged).
    assert ModConfig(mod_mode="sparse").resolve(8).mod_layers_idx == []
    for mode in ("first_half", "sparse", "dense"):  # officially these include layer 0
        with pytest.raises(ModConfigError, match="layer 0 must stay dense.*mod_layers_idx explicitly"):
            ModConfig(mod_mode=mode, compat="official").resolve(8)
    for mode in ("true", True, "custom"):
        with pytest.raises(ModConfigError, match="mod_layers_idx is required"):
            ModConfig(mod_mode=mode)


def test_unknown_mod_mode_names_accepted_values_and_the_file(tmp_path):
    with pytest.raises(ModConfigError, match="half_and_half.*accepted: arank_mod, true, first_half"):
        ModConfig(mod_mode="half_and_half")
    folder = official_folder(tmp_path, "half_and_half")
    with pytest.raises(ModConfigError, match="config.json.*accepted: arank_mod"):
        AutoModelForCausalLM.from_pretrained(folder)
    with pytest.raises(ModConfigError, match=f"{folder}/config.json: mod.mod_mode 'half_and_half'"):
        load_config(folder)


def test_official_mode_refuses_non_official_options():
    with pytest.raises(ModConfigError, match="reproduces gamma-MoD"):
        ModConfig(compat="official", strategy="pmod")
    with pytest.raises(ModConfigError, match="mod.compat must be one of"):
        ModConfig(compat="paper")


@pytest.mark.parametrize("name,layout,region", [("llava_v1_5_tiny", "llava_hr", 1059), ("llava_hr_tiny", "llava_hr", 1059),
                                                ("mgm_hd_tiny", "mgm", 2880)])
def test_region_and_layout_follow_the_vision_tower(name, layout, region):
    config = build_config(name, vocab_size=64, image_token_index=5, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    config.mod = {"mod_mode": "arank_mod", "mod_layers_idx": [1, 2]}
    mod = config.mod_config()
    assert (mod.official, mod.official_layout, mod.region) == (True, layout, region)
    config.mod = {**config.mod, "official_region": 600}
    assert config.mod_config().region == 600


# -- pure rules ----------------------------------------------------------------------------------------
def test_official_kept_counts():
    # llava_hr, R = 1059: T - floor(529.5) kept once T > R; everything at T <= R.
    assert official_train_kept_count(1100, 1059, "llava_hr") == 571
    assert official_train_kept_count(1060, 1059, "llava_hr") == 531
    assert official_train_kept_count(1059, 1059, "llava_hr") is None
    # mgm, R = 2880: T - 1440 ... except where the official float formula lands above an integer:
    # 2883 * (1 - 1440 / 2883) = 1443.0000000000002 -> ceil 1444 (one more kept).
    assert official_train_kept_count(3000, 2880, "mgm") == 1560
    assert official_train_kept_count(2883, 2880, "mgm") == 1444
    assert official_train_kept_count(11, 2880, "mgm") == 6  # text-only: ceil(T / 2)


def test_keep_top_with_priority():
    scores = torch.tensor([[0.9, 0.1, 0.5, 0.3, 0.2, 0.8]])
    priority = torch.tensor([[False, False, False, False, True, True]])
    assert keep_top_with_priority(scores, priority, 4).tolist() == [[True, False, True, False, True, True]]
    assert keep_top_with_priority(scores, priority, 1).tolist() == [[False, False, False, False, False, True]]


def test_mgm_text_only_rule_prefers_unlabelled_tokens():
    scores = torch.tensor([[0.1, 0.2, 0.9, 0.8, 0.3, 0.7]])
    labels = torch.tensor([[-100, -100, 7, 8, 9, 10]])  # 2 prompt tokens, 4 answer tokens; k = ceil(6 / 2) = 3
    keep, competing = official_train_keep(scores, region=8, layout="mgm", labels=labels)
    assert keep.tolist() == [[True, True, True, False, False, False]]  # prompt + the best answer token (0.9)
    assert competing.tolist() == [[False, False, True, True, True, True]]
    keep, _ = official_train_keep(scores, region=8, layout="mgm", labels=None)  # no labels: all compete
    assert keep.tolist() == [[False, False, True, True, False, True]]
    keep, competing = official_train_keep(scores, region=8, layout="llava_hr", labels=labels)
    assert keep.all() and not competing.any()


# -- positions: prefill and decode ---------------------------------------------------------------------
def test_prefill_threshold_renumbers_kept_tokens(tiny_model):
    model = official(tiny_model)
    layer = model.model.layers[1]
    steer_router(layer)
    # Tokens 2 (image) and 6 (question) have p < 0.005; the rest p ~ 1.
    h = hidden([KEEP, 1.0, SKIP, 2.0, KEEP, 3.0, SKIP, KEEP])
    with torch.no_grad():
        out = run_layer(model, layer, h, context(model, 1, 8))
        kept = [0, 1, 3, 4, 5, 7]
        expected = reference(model, layer, h[:, kept], range(6))  # positions 0..5, not 0,1,3,4,5,7
        at_original = reference(model, layer, h[:, kept], kept)
    assert torch.allclose(out[:, kept], expected, atol=1e-5)
    assert not torch.allclose(out[:, kept], at_original, atol=1e-2)  # the positions matter
    assert torch.equal(out[:, [2, 6]], h[:, [2, 6]])


def test_threshold_prefill_skips_a_question_token(tiny_model):
    """Official: p > 0.005 over ALL tokens. Ours (threshold prefill): question tokens are never routable."""
    h = hidden([KEEP, SKIP, KEEP, KEEP, SKIP, KEEP])
    routable = torch.tensor([[True, True, True, False, False, False]])  # system + image | question
    keeps = {}
    for name, model in (("official", official(tiny_model)),
                        ("ours", convert_to_mod(copy.deepcopy(tiny_model), [1, 2], prefill="threshold").eval())):
        layer = model.model.layers[1]
        steer_router(layer)
        ctx = context(model, 1, 6, routable=routable)
        with torch.no_grad():
            run_layer(model, layer, h, ctx)
        keeps[name] = ctx.stats[1].keep[0].tolist()
        if name == "official":
            assert (ctx.stats[1].routable, ctx.stats[1].skipped) == (6, 2)
    assert keeps["official"] == [True, False, True, True, False, True]  # question token 4 skipped
    assert keeps["ours"] == [True, False, True, True, True, True]


def test_decode_position_is_the_layers_kept_cache_length(tiny_model):
    model = official(tiny_model)
    layer = model.model.layers[1]
    steer_router(layer)
    prompt = hidden([KEEP, 1.0, SKIP, 2.0, KEEP, 3.0, SKIP, KEEP])
    new = hidden([KEEP], seed=1)
    kept = [0, 1, 3, 4, 5, 7]
    with torch.no_grad():
        cache = DynamicCache(config=model.config)
        run_layer(model, layer, prompt, context(model, 1, 8), cache=cache)
        assert cache.get_seq_length(1) == 6  # skipped tokens are not cached
        out = run_layer(model, layer, new, context(model, 1, 1, decode=torch.ones(1, 1, dtype=torch.bool)),
                        cache=cache, start=8)
        assert cache.get_seq_length(1) == 7
        sequence = torch.cat([prompt[:, kept], new], dim=1)
        expected = reference(model, layer, sequence, range(7))[:, -1:]  # new token at position 6, not 8
        at_original = reference(model, layer, sequence, kept + [8])[:, -1:]
    assert torch.allclose(out, expected, atol=1e-5)
    assert not torch.allclose(out, at_original, atol=1e-2)


def test_decode_skip_follows_batch_row_zero_and_caches_nothing(tiny_model):
    model = official(tiny_model)
    layer = model.model.layers[1]
    steer_router(layer)
    prompt = hidden([[KEEP, 1.0, KEEP], [KEEP, SKIP, KEEP]])
    for row0, row1, skipped in ((SKIP, KEEP, True), (KEEP, SKIP, False)):
        new = hidden([[row0], [row1]], seed=2)
        with torch.no_grad():
            cache = DynamicCache(config=model.config)
            run_layer(model, layer, prompt, context(model, 2, 3), cache=cache)
            before = cache.get_seq_length(1)
            out = run_layer(model, layer, new, context(model, 2, 1, decode=torch.ones(2, 1, dtype=torch.bool)),
                            cache=cache, start=3)
        assert torch.equal(out, new) == skipped
        assert cache.get_seq_length(1) == before + (0 if skipped else 1)
    # Without a `decode` marker, a one-token forward is a decode step (the official `seq_len <= 1`).
    with torch.no_grad():
        single = hidden([SKIP], seed=3)
        assert torch.equal(run_layer(model, layer, single, context(model, 1, 1)), single)


def test_mgm_decode_keeps_every_token_at_its_original_position(tiny_model):
    model = official(tiny_model, official_layout="mgm")
    layer = model.model.layers[1]
    steer_router(layer)
    prompt = hidden([KEEP, 1.0, SKIP, 2.0, KEEP, 3.0, SKIP, KEEP])
    new = hidden([SKIP], seed=1)  # p < 0.5: the llava_hr rule would skip it; the mgm file never does
    kept = [0, 1, 3, 4, 5, 7]
    with torch.no_grad():
        cache = DynamicCache(config=model.config)
        run_layer(model, layer, prompt, context(model, 1, 8, position_ids=torch.arange(8).view(1, 8)), cache=cache)
        ctx = context(model, 1, 1, decode=torch.ones(1, 1, dtype=torch.bool), position_ids=torch.tensor([[8]]))
        out = run_layer(model, layer, new, ctx, cache=cache, start=8)
        sequence = torch.cat([prompt[:, kept], new], dim=1)
        expected = reference(model, layer, sequence, list(range(6)) + [8])[:, -1:]
    assert cache.get_seq_length(1) == 7
    assert torch.allclose(out, expected, atol=1e-5)


def test_cached_decode_equals_uncached_recomputation(tiny_model):
    model = official(tiny_model)
    with torch.no_grad():
        model.model.layers[1].router.weight.mul_(300)  # spread p: some prompt tokens below 0.005, decode both ways
    ids, _, pixels = multimodal_batch(batch=1, question_lengths=(6,))
    start = ids.shape[1]
    with torch.no_grad():
        out = model(input_ids=ids, pixel_values=pixels, use_cache=True, mod_decode_start=start)
        prefill_skipped = sum(s for _, s in model.last_routing_stats.values())
        cache, tokens, decode_skips = out.cache, ids, 0
        for next_id in (7, 30, 41, 12, 55, 23, 9, 60):  # teacher-forced: varied tokens, varied p
            token = torch.tensor([[next_id]])
            tokens = torch.cat([tokens, token], dim=1)
            out = model(input_ids=token, cache=cache, use_cache=True, mod_decode_start=start)
            decode_skips += sum(s for _, s in model.last_routing_stats.values())
            full = model(input_ids=tokens, pixel_values=pixels, mod_decode_start=start)
            assert torch.allclose(out.logits[:, -1], full.logits[:, -1], atol=1e-4)
    assert prefill_skipped > 0 and decode_skips > 0  # both rules were exercised
    assert cache.get_seq_length(1) < cache.get_seq_length(0)


# -- training: fixed routable region, routing loss ------------------------------------------------------
def test_training_region_top_k_and_renumbered_positions(tiny_model):
    model = official(tiny_model, official_region=8).train()
    layer = model.model.layers[1]
    steer_router(layer)
    # T = 12 > R = 8: k = ceil(12 * (1 - 4 / 12)) = 8, so 4 of the 8 region tokens are kept (the highest p:
    # positions 0, 2, 4, 6) and positions 8..11 are kept whatever their p.
    h = hidden([3.0, -3.0, 2.5, -2.5, 2.0, -2.0, 1.5, -1.5, SKIP, SKIP, -1.0, SKIP])
    ctx = context(model, 1, 12)
    out = run_layer(model, layer, h, ctx)
    kept = [0, 2, 4, 6, 8, 9, 10, 11]
    assert ctx.stats[1].keep[0].nonzero().flatten().tolist() == kept
    assert (ctx.stats[1].routable, ctx.stats[1].skipped) == (8, 4)
    with torch.no_grad():
        assert torch.allclose(out[:, kept], reference(model, layer, h[:, kept], range(8)), atol=1e-5)
    assert torch.equal(out[:, [1, 3, 5, 7]], h[:, [1, 3, 5, 7]])


def test_training_nothing_skipped_when_seq_len_fits_the_region(tiny_model):
    model = official(tiny_model, official_region=8).train()
    layer = model.model.layers[1]
    steer_router(layer)
    h = hidden([SKIP, KEEP, SKIP, SKIP, KEEP, SKIP, SKIP, SKIP])  # T = R = 8
    ctx = context(model, 1, 8)
    out = run_layer(model, layer, h, ctx)
    assert ctx.stats[1].keep.all() and (ctx.stats[1].routable, ctx.stats[1].skipped) == (0, 0)
    with torch.no_grad():
        assert torch.allclose(out, reference(model, layer, h, range(8)), atol=1e-5)


def test_routing_loss_is_cross_entropy_over_all_tokens(tiny_model):
    """B = 2, T = 6, R = 4 (k = 4: 2 of 4 region tokens + positions 4, 5), row 1 right-padded: the
    official loss averages over all 12 tokens, padding and question included."""
    model = official(tiny_model, official_region=4).train()
    layer = model.model.layers[1]
    steer_router(layer, scale=1.5)
    dim0 = torch.tensor([[2.0, -1.0, 0.5, 1.0, -2.0, 0.3], [-0.5, 1.5, 1.0, -1.5, 0.2, -3.0]])
    h = hidden(dim0)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0]])
    ctx = context(model, 2, 6, attention_mask=mask)
    run_layer(model, layer, h, ctx)
    keep = torch.tensor([[True, False, False, True, True, True], [False, True, True, False, True, True]])
    assert torch.equal(ctx.stats[1].keep, keep)
    # By hand: normed0 = h0 / rms(h); logits (0, 1.5 * normed0); CE = softplus(-z) for target 1, softplus(z) for 0.
    z = 1.5 * h[..., 0] / torch.sqrt(h.pow(2).mean(-1) + model.config.rms_norm_eps)
    expected = torch.where(keep, torch.nn.functional.softplus(-z), torch.nn.functional.softplus(z)).mean()
    assert torch.allclose(ctx.stats[1].loss, expected, atol=1e-6)


def test_model_loss_sums_layer_losses_times_coef(tiny_model):
    model = official(tiny_model, official_region=10).train()
    ids, mask, pixels = multimodal_batch(batch=2, question_lengths=(4, 6))
    labels = ids.masked_fill(mask == 0, -100)
    out = model(input_ids=ids, attention_mask=mask, pixel_values=pixels, labels=labels)
    assert torch.allclose(out.loss, out.lm_loss + 0.01 * out.routing_loss)
    assert 0 < model.last_routing_stats[1][1] < model.last_routing_stats[1][0]  # region tokens were skipped


# -- loading released folders --------------------------------------------------------------------------
def official_folder(tmp_path, mod_mode, name="llava_v1_5_tiny", layers=(1, 2)):
    from test_checkpoint_loading import official_config, official_state_dict, source_model, write_sharded

    model = source_model(name, mod=True)
    config = official_config(model)
    config["mod"].update(mod_mode=mod_mode, mod_layers_idx=list(layers))
    folder = tmp_path / f"ckpt-{mod_mode}"
    write_sharded(folder, official_state_dict(model), config)
    return folder


@pytest.mark.parametrize("mod_mode", ["arank_mod", True, "sparse"])
def test_official_folder_loads_with_auto_model_and_keeps_mod_mode(mod_mode, tmp_path, caplog):
    folder = official_folder(tmp_path, mod_mode)
    with caplog.at_level(logging.INFO, logger="gamma_mod.model.llava_llama"):
        # No trust_remote_code; official configs do not record the image token id.
        loaded = AutoModelForCausalLM.from_pretrained(folder, image_token_index=5).eval()
    auto = mod_mode != "sparse"
    lines = [r for r in caplog.records if "official gamma-MoD code" in r.getMessage()]
    assert len(lines) == (1 if auto else 0)
    mod = loaded.model.layers[1].mod
    assert loaded.model.mod_layer_indices == [1, 2] and mod.official == auto
    # Outputs: the same weights converted with the compat switch set explicitly, and not the other way.
    from test_checkpoint_loading import inputs, source_model

    batch = inputs(loaded.config)
    with torch.no_grad():
        got = loaded(**batch).logits
        for compat in ("official", "ours"):
            reference_model = convert_to_mod(source_model("llava_v1_5_tiny", mod=False), [1, 2], compat=compat)
            reference_model.load_state_dict(loaded.state_dict())
            same = torch.equal(got, reference_model.eval()(**batch).logits)
            assert same == ((compat == "official") == auto), compat
    loaded.save_pretrained(tmp_path / "saved")
    saved = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert saved["mod"]["mod_mode"] == mod_mode and "compat" not in saved["mod"]


def test_official_mgm_folder_selects_the_mgm_layout(tmp_path):
    from gamma_mod.model.checkpoints import load_official_checkpoint

    loaded = load_official_checkpoint(official_folder(tmp_path, "arank_mod", name="mgm_hd_tiny"), image_token_index=5)
    mod = loaded.model.layers[1].mod
    assert (mod.official, mod.official_layout, mod.region) == (True, "mgm", 2880)


def test_compat_override_on_load_and_in_convert(tmp_path, tiny_model):
    folder = official_folder(tmp_path, "arank_mod")
    assert not load_config(folder, "ours").mod_config().official
    assert load_config(folder, "official").mod_config().official
    tiny_model.save_pretrained(tmp_path / "dense")
    with pytest.raises(ModConfigError, match="no MoD layers"):
        load_config(tmp_path / "dense", "official")

    from gamma_mod.cli import main

    assert main(["convert", "--model", str(tmp_path / "dense"), "--layers", "1,2", "--out", str(tmp_path / "mod"),
                 "--compat", "official"]) == 0
    assert json.loads((tmp_path / "mod" / "config.json").read_text())["mod"]["compat"] == "official"


@pytest.mark.parametrize("module,required", [
    ("gamma_mod.eval.cli", ["--model", "m", "--benchmark", "synthetic", "--data", "d"]),
    ("gamma_mod.eval.speed", ["--dense", "a", "--mod", "b"]),
    ("gamma_mod.eval.skipmap", ["--model", "m", "--image", "i", "--question", "q"]),
])
def test_cli_commands_take_compat(module, required):
    import argparse
    import importlib

    parser = argparse.ArgumentParser()
    importlib.import_module(module).add_arguments(parser)
    assert parser.parse_args(required + ["--compat", "official"]).compat == "official"
    assert parser.parse_args(required).compat is None


def test_default_behaviour_is_unchanged(tiny_model):
    """compat unset with our own mod_mode: original positions, routable-only loss (as before this switch)."""
    mod = convert_to_mod(copy.deepcopy(tiny_model), [1, 2]).eval()
    assert not mod.model.layers[1].mod.official and "compat" in mod.config.mod and mod.config.mod["compat"] is None
    assert math.isclose(mod.model.layers[1].mod.layer_skip_ratio(1), 0.5)


def test_official_mode_logs_that_skip_ratio_is_not_used(tiny_model, caplog):
    with caplog.at_level(logging.INFO, logger="gamma_mod.model.llava_llama"):
        model = convert_to_mod(copy.deepcopy(tiny_model), [1, 2], skip_ratio=0.34, compat="official")
    assert any(r.levelno == logging.WARNING and "skip_ratio (official capacity_factor) 0.34 is not used" in r.getMessage()
               for r in caplog.records)
    assert model.model.layers[1].mod.layer_skip_ratio(1) == 0.5


def test_official_key_names_are_read_at_the_boundary_only():
    """Released configs say capacity_factor (older gamma-mod folders layer_capacity); ours is skip_ratio."""
    official = ModConfig.from_dict({"mod_layers_idx": [1, 2], "capacity_factor": 0.34, "layer_capacity": {"2": 0.5}})
    assert official.skip_ratio == 0.34 and official.layer_skip_ratios == {2: 0.5}
    assert official.layer_skip_ratio(1) == 0.34 and official.layer_skip_ratio(2) == 0.5
    saved = official.to_dict()
    assert "capacity_factor" not in saved and saved["skip_ratio"] == 0.34
    assert ModConfig.from_dict({"mod_layers_idx": [1], "capacity_factor": 0.5, "skip_ratio": 0.5}).skip_ratio == 0.5
    with pytest.raises(ModConfigError, match=r"both capacity_factor \(0.5\) and skip_ratio \(0.34\)"):
        ModConfig.from_dict({"mod_layers_idx": [1], "capacity_factor": 0.5, "skip_ratio": 0.34})


def test_one_list_of_routing_strategies():
    from gamma_mod.mod.strategies import ROUTING_STRATEGIES, GammaStrategy, PModStrategy, build_strategy

    assert ROUTING_STRATEGIES == {"gamma": GammaStrategy, "pmod": PModStrategy}
    assert isinstance(build_strategy(ModConfig(mod_layers_idx=[1], strategy="pmod")), PModStrategy)
    with pytest.raises(ModConfigError, match=r"routing strategy\) must be one of \('gamma', 'pmod'\), got 'fastv'"):
        ModConfig(mod_layers_idx=[1], strategy="fastv")
