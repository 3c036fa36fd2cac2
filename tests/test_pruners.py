"""Token pruners (FastV, PDrop): hand-computed drops, a hand-written reference forward, the KV cache,
generate with and without cache, batch vs single, MoD models and every base family's tiny twin."""

import copy
import json
import math

import pytest
import torch
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from gamma_mod.eval.flops import (decoder_tflops, layer_flops, measured_layer_tokens, per_sample_tflops,
                                  pruned_decoder_tflops, pruned_layer_tokens)
from gamma_mod.mod.convert import convert_to_mod
from gamma_mod.model import LlavaLlamaForCausalLM
from gamma_mod.model.builder import build_config
from gamma_mod.model.configuration import load_config
from gamma_mod.prune import PrunerConfigError, build_pruner, parse_pruner_spec
from gamma_mod.prune.ranking import key_attention, keep_top_scoring, layer_key_attention, query_mask
from gamma_mod.prune.session import PruneSession

from conftest import IMAGE_TOKEN, NUM_IMAGE_TOKENS, multimodal_batch, tiny_config

SYSTEM_LEN = 3  # multimodal_batch: [bos, 3 system tokens, 16 image tokens, question]
FIRST_IMAGE = 1 + SYSTEM_LEN


def pruned(model, spec):
    model = copy.deepcopy(model)
    model.set_pruner(spec)
    return model


def mod_model(base, ratio=0.5, layers=(1, 2)):
    return convert_to_mod(copy.deepcopy(base), list(layers), skip_ratio=ratio).eval()


# -- configuration ---------------------------------------------------------------------------------
def test_spec_parsing_and_config_errors():
    assert parse_pruner_spec("fastv:K=2,R=0.5") == {"method": "fastv", "k": 2, "r": 0.5}
    assert parse_pruner_spec("pdrop:layers=8,16,24,lambda=0.5,query=text") == {
        "method": "pdrop", "layers": [8, 16, 24], "lam": 0.5, "query": "text"}
    assert parse_pruner_spec("none") is None and build_pruner("none") is None
    assert build_pruner("pdrop:layers=3").config.layers == (3,)
    assert build_pruner({"method": "fastv"}).config == build_pruner("fastv:k=2,r=0.5").config
    with pytest.raises(PrunerConfigError, match="unknown options"):
        build_pruner("fastv:k=2,ratio=0.5")
    with pytest.raises(PrunerConfigError, match="method must be one of"):
        build_pruner("sparsevlm:k=2")
    with pytest.raises(PrunerConfigError, match="K must be an integer >= 1"):
        build_pruner("fastv:K=0")
    with pytest.raises(PrunerConfigError, match=r"R .* must be in \[0, 1\]"):
        build_pruner("fastv:R=1.5")
    with pytest.raises(PrunerConfigError, match="increasing"):
        build_pruner("pdrop:layers=3,2")
    with pytest.raises(PrunerConfigError, match="query must be one of"):
        build_pruner("pdrop:query=first")
    with pytest.raises(PrunerConfigError, match="outside 1..3"):  # a 4-layer model has no layer 4
        tiny_config(prune={"method": "pdrop", "layers": [2, 4]})


def test_pruner_round_trips_through_config_json(tiny_model, tmp_path):
    ids, mask, pixels = multimodal_batch(batch=1)
    model = pruned(tiny_model, "fastv:K=2,R=0.5")
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["prune"] == {"method": "fastv", "k": 2, "r": 0.5,
                                                                            "query": "last"}
    loaded = LlavaLlamaForCausalLM.from_pretrained(tmp_path).eval()
    assert loaded.model.pruner.describe() == "FastV K=2 R=0.5"
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=ids, pixel_values=pixels).logits,
                           model(input_ids=ids, pixel_values=pixels).logits)
    loaded.set_pruner(None)
    assert loaded.config.prune is None and loaded.model.pruner is None


def test_official_mod_mode_refuses_a_pruner(tiny_model):
    mod = mod_model(tiny_model)
    mod.config.set_mod_compat("official")
    with pytest.raises(PrunerConfigError, match="compat 'ours'"):
        mod.set_pruner("fastv")


def test_flash_attention_is_refused():
    with pytest.raises(ValueError, match="takes no custom masks"):
        PruneSession.start(build_pruner("fastv"), hidden=torch.zeros(1, 4, 8), input_ids=torch.ones(1, 4, dtype=torch.long),
                           image_token=5, step_mask=None, past=0, decode_start=None, labels=None, cache=None,
                           attn_implementation="flash_attention_2")


# -- kept counts and ranking, by hand --------------------------------------------------------------
def test_kept_counts_follow_the_official_rounding():
    n = torch.tensor([576, 5, 64])
    # FastV: round(N * (1 - R)); Python rounds 2.5 to 2.
    assert build_pruner("fastv:R=0.5").keep_counts(n, 0).tolist() == [288, 2, 32]
    assert build_pruner("fastv:R=0.75").keep_counts(n, 0).tolist() == [144, 1, 16]
    # PDrop: int(N * lambda^(s+1)) of the ORIGINAL count at every stage.
    pdrop = build_pruner("pdrop:layers=8,16,24,lambda=0.5")
    assert [pdrop.keep_counts(n, s).tolist() for s in range(3)] == [[288, 2, 32], [144, 1, 16], [72, 0, 8]]
    # int() truncates the float product: 10 * 0.7 ** 2 = 4.9 -> 4.
    assert build_pruner("pdrop:layers=1,2,lambda=0.7").keep_counts(torch.tensor([10]), 1).tolist() == [4]
    assert build_pruner("pdrop:layers=1,2,ratios=0.6,0.2").keep_counts(torch.tensor([10]), 1).tolist() == [2]


def test_hand_made_attention_pattern_gives_the_hand_computed_drop():
    """Two heads, one query (position 5) and keys 0..6; D=1, q=1, so each logit is the key value.

    Key 6 is after the query (causal: unseen), key 4 is padding. Image tokens: 1, 2, 3.
    head 0 logits: [0, 2, 0, 1.2, 9, 0, 9]
    head 1 logits: [0, 0, 3, 1.2, 9, 0, 9]
    Mean LOGITS would rank image 2 (1.5) > image 3 (1.2) > image 1 (1.0); the mean of the heads'
    PROBABILITIES (each head with its own denominator) ranks image 1 above image 3.
    """
    k = torch.tensor([[0, 2, 0, 1.2, 9, 0, 9], [0, 0, 3, 1.2, 9, 0, 9]], dtype=torch.float32).view(1, 2, 7, 1)
    q = torch.ones(1, 2, 1, 1)
    key_valid = torch.tensor([[True, True, True, True, False, True, True]])
    scores = key_attention(q, k, torch.tensor([[5]]), torch.tensor([[True]]), key_valid, scaling=1.0)
    e, c = math.e, math.exp(1.2)
    s0, s1 = 3 + e**2 + c, 3 + e**3 + c  # softmax denominators of head 0 and head 1 (keys 0, 1, 2, 3, 5)
    expected = [(1 / s0 + 1 / s1) / 2, (e**2 / s0 + 1 / s1) / 2, (1 / s0 + e**3 / s1) / 2, (c / s0 + c / s1) / 2,
                0.0, (1 / s0 + 1 / s1) / 2, 0.0]
    assert scores[0].tolist() == pytest.approx(expected, rel=1e-6)
    # image 1: 0.288, image 2: 0.417, image 3: 0.184 -> keeping 2 of 3 drops image 3.
    image = torch.tensor([[False, True, True, True, False, False, False]])
    keep = keep_top_scoring(scores, image, torch.tensor([2]))
    assert (image & ~keep).nonzero()[:, 1].tolist() == [3]
    assert keep[~image].all()  # non-image tokens always stay
    assert (image & keep_top_scoring(scores, image, torch.tensor([1]))).nonzero()[:, 1].tolist() == [2]
    # Ties go to the earlier token.
    tie = keep_top_scoring(torch.tensor([[0.0, 0.5, 0.5, 0.5]]), torch.tensor([[False, True, True, True]]),
                           torch.tensor([2]))
    assert tie.tolist() == [[True, True, True, False]]


def test_two_queries_are_averaged_per_row_and_filler_queries_ignored():
    # Row 0: queries at 2 and 3; row 1: one query at 3 (its second slot is filler).
    k = torch.tensor([0.0, 1.0, 0.0, 0.0]).view(1, 1, 4, 1).expand(2, 1, 4, 1)
    q = torch.ones(2, 1, 2, 1)
    index = torch.tensor([[2, 3], [3, 0]])
    valid = torch.tensor([[True, True], [True, False]])
    scores = key_attention(q, k, index, valid, torch.ones(2, 4, dtype=torch.bool), scaling=1.0)
    e = math.e
    q2 = [1 / (2 + e), e / (2 + e), 1 / (2 + e), 0.0]  # query at 2 sees keys 0..2
    q3 = [1 / (3 + e), e / (3 + e), 1 / (3 + e), 1 / (3 + e)]
    assert scores[0].tolist() == pytest.approx([(a + b) / 2 for a, b in zip(q2, q3)], rel=1e-6)
    assert scores[1].tolist() == pytest.approx(q3, rel=1e-6)


def test_query_modes():
    is_image = torch.tensor([[False, True, True, False, False, False]])
    prompt = torch.tensor([[True, True, True, True, True, False]])  # the last token was generated
    assert query_mask("last", prompt, is_image).nonzero()[:, 1].tolist() == [4]
    assert query_mask("text", prompt, is_image).nonzero()[:, 1].tolist() == [0, 3, 4]
    # PDrop's training rule: the token before each answer span (answers at 2..3 and 5).
    labels = torch.tensor([[-100, -100, 7, 8, -100, 9]])
    assert query_mask("instruction", torch.ones_like(prompt), is_image, labels).nonzero()[:, 1].tolist() == [1, 4]
    assert query_mask("instruction", prompt, is_image, None).nonzero()[:, 1].tolist() == [4]


def test_layer_ranking_equals_eager_attention_probabilities(tiny_model):
    """The pruners' attention (own q/k, ranking queries only) == rows of the layer's eager attention map."""
    layer = tiny_model.model.layers[1]
    torch.manual_seed(3)
    h = torch.randn(2, 9, 64)
    mask2d = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1, 1], [1] * 9])  # row 0 left-padded
    positions = (mask2d.cumsum(-1) - 1).clamp(min=0)
    cos, sin = tiny_model.model.rotary_emb(h, positions)
    queries = torch.zeros(2, 9, dtype=torch.bool)
    queries[:, [6, 8]] = True
    ours = layer_key_attention(layer, h, cos, sin, queries, mask2d.bool())

    eager = copy.deepcopy(layer)
    eager.self_attn.config = copy.deepcopy(eager.self_attn.config)
    eager.self_attn.config._attn_implementation = "eager"
    allowed = torch.ones(9, 9, dtype=torch.bool).tril() & mask2d.bool().unsqueeze(1) | torch.eye(9, dtype=torch.bool)
    additive = torch.zeros(2, 1, 9, 9).masked_fill(~allowed.unsqueeze(1), torch.finfo(torch.float32).min)
    with torch.no_grad():
        _, probs = eager.self_attn(eager.input_layernorm(h), position_embeddings=(cos, sin), attention_mask=additive)
    expected = probs.mean(dim=1)[:, [6, 8]].mean(dim=1)  # mean over heads, then over the two queries
    assert torch.allclose(ours, expected, atol=1e-6)


# -- the model with a pruner -----------------------------------------------------------------------
@pytest.mark.parametrize("spec", ["fastv:K=2,R=0", "pdrop:layers=1,3,lambda=1", "fastv:K=1,R=0.02"])
@pytest.mark.parametrize("kind", ["dense", "mod"])
@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_nothing_dropped_equals_the_model_exactly(tiny_model, spec, kind, padding_side):
    """R=0 (FastV) and lambda=1 (PDrop keeps everything) give bit-identical logits; so does an R too small
    to drop one of 16 image tokens (round(16 * 0.98) = 16)."""
    base = tiny_model if kind == "dense" else mod_model(tiny_model)
    ids, mask, pixels = multimodal_batch(batch=3, question_lengths=(4, 7, 5), padding_side=padding_side)
    with torch.no_grad():
        expected = base(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits
        got = pruned(base, spec)(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits
    assert torch.equal(got, expected)


def eager_copy(model):
    model = copy.deepcopy(model)
    model.config._attn_implementation = "eager"
    return model


def causal(n):
    return torch.zeros(1, 1, n, n).masked_fill(~torch.ones(n, n, dtype=torch.bool).tril(), torch.finfo(torch.float32).min)


def reference_forward(model, ids, pixels, stages):
    """Hand-written pruned forward for one unpadded row: every layer in eager attention; stage
    (layer P, rank layer r, kept n): layer r's attention probabilities on its own input, last token's
    row, mean over heads, rank the image tokens (ties: earlier first), keep n; layers >= P see only
    the kept tokens, at their original positions. Returns last-position logits, kept positions, and
    each layer's (k, v) of the kept tokens."""
    lm = eager_copy(model).model
    with torch.no_grad():
        h = lm.embed_inputs(ids, pixels)
        present = torch.arange(ids.shape[1])
        pending, kv = {}, []
        for i, layer in enumerate(lm.layers):
            cos_sin = lm.rotary_emb(h, present.unsqueeze(0))
            for P, r, n in stages:
                if P == i and r < i:
                    keep = pending[P]
                    present, h, cos_sin = present[keep], h[:, keep], (cos_sin[0][:, keep], cos_sin[1][:, keep])
                if r == i:
                    _, probs = layer.self_attn(layer.input_layernorm(h), position_embeddings=cos_sin,
                                               attention_mask=causal(h.shape[1]))
                    row = probs[0, :, -1].mean(dim=0)  # (T',) last token, mean over heads
                    image = [j for j in range(len(present)) if ids[0, present[j]] == IMAGE_TOKEN]
                    ranked = sorted(image, key=lambda j: (-float(row[j]), j))
                    keep = torch.ones(len(present), dtype=torch.bool)
                    keep[ranked[n:]] = False
                    pending[P] = keep
                if P == i and r == i:
                    keep = pending[P]
                    present, h, cos_sin = present[keep], h[:, keep], (cos_sin[0][:, keep], cos_sin[1][:, keep])
            normed = layer.input_layernorm(h)
            shape = (1, h.shape[1], -1, layer.self_attn.head_dim)
            k = layer.self_attn.k_proj(normed).view(shape).transpose(1, 2)
            k, _ = apply_rotary_pos_emb(k, k, *cos_sin)
            kv.append((k, layer.self_attn.v_proj(normed).view(shape).transpose(1, 2)))
            h = layer(h, attention_mask=causal(h.shape[1]), position_embeddings=cos_sin)
        logits = model.lm_head(lm.norm(h))[:, -1]
    return logits, present, kv


@pytest.mark.parametrize("spec,stages", [
    ("fastv:K=2,R=0.5", [(2, 1, 8)]),
    ("fastv:K=1,R=0.75", [(1, 0, 4)]),
    ("pdrop:layers=1,2,3,lambda=0.5", [(1, 1, 8), (2, 2, 4), (3, 3, 2)]),
])
def test_pruned_forward_equals_hand_written_reference(tiny_model, spec, stages):
    ids, mask, pixels = multimodal_batch(batch=1, question_lengths=(5,))
    expected, kept_positions, kv = reference_forward(tiny_model, ids, pixels, stages)
    model = pruned(tiny_model, spec)
    with torch.no_grad():
        out = model(input_ids=ids, pixel_values=pixels, use_cache=True)
    assert torch.allclose(out.logits[:, -1], expected, atol=1e-5)
    # The KV cache after prefill holds exactly the surviving tokens, at their original positions.
    T = ids.shape[1]
    for i, (k, v) in enumerate(kv):
        layer_cache = out.cache.layers[i]
        assert layer_cache.keys.shape[2] == k.shape[2]
        assert torch.allclose(layer_cache.keys, k, atol=1e-5) and torch.allclose(layer_cache.values, v, atol=1e-5)
    last_stage = stages[-1][0]
    assert out.cache.layers[last_stage].keys.shape[2] == len(kept_positions) == T - (NUM_IMAGE_TOKENS - stages[-1][2])
    for i in range(stages[0][0]):
        assert out.cache.layers[i].keys.shape[2] == T
    stats = model.model.last_prune_stats
    assert stats.kept_image == {P: torch.tensor([n]) for P, _, n in stages}


def test_dropped_tokens_leave_every_later_layer_and_sdpa_stays_on(tiny_model, monkeypatch):
    """Every layer attends with SDPA (never a whole-model eager map) over exactly its present tokens."""
    calls = []
    sdpa = ALL_ATTENTION_FUNCTIONS["sdpa"]

    def counting(module, query, key, value, mask, **kwargs):
        if hasattr(module, "layer_idx"):  # decoder layers (the CLIP tower uses SDPA too)
            calls.append((module.layer_idx, query.shape[2], key.shape[2]))
        return sdpa(module, query, key, value, mask, **kwargs)

    monkeypatch.setitem(ALL_ATTENTION_FUNCTIONS, "sdpa", counting)
    ids, mask, pixels = multimodal_batch(batch=1, question_lengths=(5,))
    T = ids.shape[1]
    with torch.no_grad():
        pruned(tiny_model, "pdrop:layers=1,3,lambda=0.5")(input_ids=ids, pixel_values=pixels)
    assert calls == [(0, T, T), (1, T - 8, T - 8), (2, T - 8, T - 8), (3, T - 12, T - 12)]


# Greedy, a fixed number of new tokens, never the image token (it would be read as an image slot).
GENERATE = dict(do_sample=False, max_new_tokens=6, min_new_tokens=6, suppress_tokens=[IMAGE_TOKEN])


def generate_both(model, **kwargs):
    return model.generate(**kwargs, **GENERATE), model.generate(**kwargs, **GENERATE, use_cache=False)


SPECS = ["fastv:K=2,R=0.5", "pdrop:layers=1,2,lambda=0.5", "fastv:K=1,R=0.75,query=text"]


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("kind", ["dense", "mod"])
def test_generate_with_cache_equals_without(tiny_model, spec, kind):
    base = tiny_model if kind == "dense" else mod_model(tiny_model)
    model = pruned(base, spec)
    ids, mask, pixels = multimodal_batch(batch=2, padding_side="left")
    with_cache, without = generate_both(model, input_ids=ids, attention_mask=mask, pixel_values=pixels)
    assert torch.equal(with_cache, without)
    # ...and pruning changed the answer at least somewhere (the comparison is not vacuous).
    assert not torch.equal(with_cache, base.generate(input_ids=ids, attention_mask=mask, pixel_values=pixels, **GENERATE))


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("kind", ["dense", "mod"])
def test_padded_batch_equals_one_at_a_time(tiny_model, spec, kind):
    model = pruned(tiny_model if kind == "dense" else mod_model(tiny_model), spec)
    ids, mask, pixels = multimodal_batch(batch=2, question_lengths=(4, 7), padding_side="left")
    batched = model.generate(input_ids=ids, attention_mask=mask, pixel_values=pixels, **GENERATE)
    with torch.no_grad():
        batched_logits = model(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits[:, -1]
    for b in range(2):
        real = mask[b].bool()
        single_ids = ids[b:b + 1, real]
        single = model.generate(input_ids=single_ids, pixel_values=pixels[b:b + 1], **GENERATE)
        assert torch.equal(single[0, -6:], batched[b, -6:])
        with torch.no_grad():
            logits = model(input_ids=single_ids, pixel_values=pixels[b:b + 1]).logits[:, -1]
        assert torch.allclose(logits[0], batched_logits[b], atol=1e-5)


def test_eager_attention_model_prunes_identically(tiny_model):
    """With eager attention the pruned layers get explicit causal masks (eager has no causal default)."""
    ids, mask, pixels = multimodal_batch(batch=2, padding_side="left")
    sdpa = pruned(tiny_model, "pdrop:layers=1,2,lambda=0.5")
    eager = eager_copy(sdpa)
    with torch.no_grad():
        a = sdpa(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits[:, -1]
        b = eager(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits[:, -1]
    assert torch.allclose(a, b, atol=1e-5)
    assert torch.equal(*generate_both(eager, input_ids=ids, attention_mask=mask, pixel_values=pixels))


def test_mod_layers_after_the_drop_route_only_present_tokens(tiny_model):
    """A MoD layer after the drop competes among the present tokens; its keep mask comes back in step
    coordinates with every dropped token marked as not processed."""
    model = pruned(mod_model(tiny_model, ratio=0.5, layers=(1, 2, 3)), "fastv:K=2,R=0.5")
    ids, mask, pixels = multimodal_batch(batch=1, question_lengths=(4,))
    with torch.no_grad():
        out = model.model(input_ids=ids, pixel_values=pixels, use_cache=True)
    T = ids.shape[1]
    stats = out.mod_context.stats
    routable_before = 1 + SYSTEM_LEN + NUM_IMAGE_TOKENS
    assert stats[1].routable == routable_before and stats[1].skipped == routable_before // 2
    assert stats[2].routable == routable_before - 8 and stats[2].skipped == (routable_before - 8) // 2
    for i in (2, 3):
        assert stats[i].keep.shape == (1, T)
        assert stats[i].keep.sum() == T - 8 - stats[i].skipped
    # Layer 2's cache: what it kept of the T - 8 present tokens.
    assert out.cache.get_seq_length(2) == T - 8 - (routable_before - 8) // 2
    present = model.model.last_prune_stats.present
    assert (~present).sum() == 8 and (ids == IMAGE_TOKEN)[~present].all()
    for i in (2, 3):
        assert not (stats[i].keep & ~present).any()


@pytest.mark.parametrize("twin,spec", [("llava_v1_5_tiny", "pdrop:layers=1,2,lambda=0.5"),
                                       ("llava_hr_tiny", "fastv:K=2,R=0.5"),
                                       ("mgm_hd_tiny", "fastv:K=2,R=0.5"), ("mgm_hd_tiny", "pdrop:layers=1,2,lambda=0.5")])
def test_every_base_family_tiny_twin(twin, spec):
    """On a MoD model of each base family (layer 1 MoD): pruned counts, the pruned cache, cache == no cache."""
    torch.manual_seed(0)
    config = build_config(twin, vocab_size=64, image_token_index=IMAGE_TOKEN, pad_token_id=0, bos_token_id=1,
                          eos_token_id=2)
    base = LlavaLlamaForCausalLM(config).eval()
    model = pruned(mod_model(base, layers=(1,)), spec)
    n_image = config.num_image_tokens
    g = torch.Generator().manual_seed(1)
    rows = [[1, 11, 12] + [IMAGE_TOKEN] * n_image + torch.randint(10, 64, (q,), generator=g).tolist() for q in (4, 6)]
    width = max(map(len, rows))
    ids = torch.zeros(2, width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for b, r in enumerate(rows):
        ids[b, width - len(r):], mask[b, width - len(r):] = torch.tensor(r), 1
    size = config.image_input_size
    pixels = torch.randn(2, 3, size, size, generator=g)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, pixel_values=pixels, use_cache=True)
    stats = model.model.last_prune_stats
    final = n_image // 2 if spec.startswith("fastv") else n_image // 4
    assert list(stats.kept_image.values())[-1].tolist() == [final, final]
    # The last layer is dense: its cache holds every present slot (left padding included).
    assert out.cache.get_seq_length(config.num_hidden_layers - 1) == width - (n_image - final)
    assert torch.equal(*generate_both(model, input_ids=ids, attention_mask=mask, pixel_values=pixels))


# -- FLOPs under the paper convention --------------------------------------------------------------
def test_pruned_flops_by_hand():
    # T=10 with N=4 image tokens, d=2, d_ff=3, 4 layers. Per layer 8*T*4 + 4*T^2*2 + 6*T*6 = 68*T + 8*T^2.
    f = {t: 68 * t + 8 * t * t for t in (10, 9, 8, 7)}
    assert all(layer_flops(t, 2, 3) == v for t, v in f.items())
    # FastV K=2 R=0.5: layers 0, 1 at T=10; layers 2, 3 drop round(4 * 0.5) = 2 -> T=8.
    fastv = build_pruner("fastv:K=2,R=0.5")
    assert pruned_layer_tokens(10, 4, 4, fastv) == [10, 10, 8, 8]
    assert pruned_decoder_tflops(10, 4, 2, 3, 4, fastv) * 1e12 == pytest.approx(2 * 1480 + 2 * 1056)
    # PDrop layers 1,3 lambda 0.5: layer 0 at 10, layers 1, 2 keep int(4 * 0.5)=2 -> 8, layer 3 keeps 1 -> 7.
    pdrop = build_pruner("pdrop:layers=1,3,lambda=0.5")
    assert pruned_layer_tokens(10, 4, 4, pdrop) == [10, 8, 8, 7]
    assert pruned_decoder_tflops(10, 4, 2, 3, 4, pdrop) * 1e12 == pytest.approx(1480 + 2 * 1056 + 868)
    # With a MoD layer (3) skipping half of what reaches it: int(7 * 0.5) = 3 -> 68*3 + 8*9 = 276.
    assert pruned_decoder_tflops(10, 4, 2, 3, 4, pdrop, mod_layers=[3], skip=0.5) * 1e12 == pytest.approx(
        1480 + 2 * 1056 + 276)
    # Nothing dropped == the dense convention.
    assert pruned_decoder_tflops(10, 4, 2, 3, 4, build_pruner("fastv:R=0")) == pytest.approx(
        decoder_tflops(10, 2, 3, 4, [], 0.0))


def test_measured_layer_tokens_from_a_pruned_forward(tiny_model):
    ids, mask, pixels = multimodal_batch(batch=2, question_lengths=(4, 6), padding_side="left")
    model = pruned(tiny_model, "fastv:K=2,R=0.5")
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask, pixel_values=pixels)
    counts = measured_layer_tokens(mask, 4, model.model.last_prune_stats)
    lengths = mask.sum(dim=1)
    assert counts.tolist() == [[int(t)] * 2 + [int(t) - 8] * 2 for t in lengths]
    d, f = 64, 128
    expected = [sum(layer_flops(int(t), d, f) for t in row) / 1e12 for row in counts]
    assert per_sample_tflops(counts, d, f).tolist() == pytest.approx(expected)


def test_a_bad_saved_pruner_names_the_config_file(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**data, "prune": {"method": "fastv", "k": 9}}))
    with pytest.raises(PrunerConfigError, match=r"config\.json: FastV K=9 R=0.5: drops before layer 9, outside 1..3"):
        load_config(tmp_path)


def test_training_forward_with_instruction_queries(tiny_model, monkeypatch):
    """PDrop's training rule: with labels, the token before each answer span ranks; the loss keeps its
    full length (image tokens carry no label) and gradients flow through the kept tokens."""
    import gamma_mod.prune.session as session

    seen = []

    def recording(layer, hidden, cos, sin, queries, key_valid):
        seen.append(queries.nonzero()[:, 1].tolist())
        return layer_key_attention(layer, hidden, cos, sin, queries, key_valid)

    monkeypatch.setattr(session, "layer_key_attention", recording)
    model = pruned(tiny_model, "pdrop:layers=1,lambda=0.5,query=instruction").train()
    ids, mask, pixels = multimodal_batch(batch=2, question_lengths=(6, 6), padding_side="right")
    labels = torch.full_like(ids, -100)
    labels[:, -3:] = ids[:, -3:]  # the last 3 tokens are the answer; the one before them ranks
    out = model(input_ids=ids, attention_mask=mask, pixel_values=pixels, labels=labels)
    out.loss.backward()
    assert torch.isfinite(out.loss) and out.logits.shape[:2] == ids.shape
    assert model.model.last_prune_stats.kept_image[1].tolist() == [8, 8]
    assert model.model.layers[3].mlp.down_proj.weight.grad.abs().sum() > 0
    # The ranking query was the token before the answer (position -4), not the sequence's last token.
    assert seen == [[ids.shape[1] - 4] * 2]
