"""The MoD layer's fast paths give exactly what the plain formulation gives.

References written here, independent of the code under test:
  keep mask    rank every routable token by a stable descending sort, keep rank < n_keep (+ every non-routable)
  index        argsort of (not kept) * T + position, first max-count columns; valid = column < row count
  gather       torch.gather with the index expanded over the channels; scatter: torch.scatter after
               putting base values into filler slots
and the layer's general path (device-read counts, gathers at every kept position, explicit masks),
which the fast paths (host counts, every-token steps without gather/scatter, no decode mask) must match
bit for bit, ties and padded batches included.
"""

import copy

import pytest
import torch
from transformers.cache_utils import DynamicCache

from gamma_mod.mod.cache import append_key_validity, cached_key_validity, key_validity_record
from gamma_mod.mod.convert import convert_to_mod
from gamma_mod.mod.layer import LayerRoutingStats, MoDDecoderLayer, ModForwardContext, RoutingCounts
from gamma_mod.mod.routing import (
    gather_tokens,
    ranked_keep_mask,
    scatter_tokens,
    selection_from_keep_mask,
    topk_keep_mask,
    topk_skip_counts,
)

from conftest import IMAGE_TOKEN, multimodal_batch


# -- references ---------------------------------------------------------------------------------------
def reference_keep(scores, routable, n_keep, rank_all=False):
    masked = scores if rank_all else scores.masked_fill(~routable, float("-inf"))
    order = masked.argsort(dim=1, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(order.shape[1]).expand_as(order))
    return (routable & (rank < n_keep.unsqueeze(1))) | ~routable


def reference_index(keep):
    batch, seq = keep.shape
    counts = keep.sum(dim=1)
    width = int(counts.max())
    key = (~keep).long() * seq + torch.arange(seq).expand(batch, seq)
    return key.argsort(dim=1)[:, :width], torch.arange(width).unsqueeze(0) < counts.unsqueeze(1)


def tied_scores(batch, seq, seed):
    """Scores with many exact ties (few distinct values), the case where the tie rule decides."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 4, (batch, seq), generator=g).float() / 4


def ragged_routable(batch, seq, seed):
    """Rows with different routable counts and spans (as padded batches give), one row with none."""
    g = torch.Generator().manual_seed(seed)
    routable = torch.zeros(batch, seq, dtype=torch.bool)
    for b in range(batch - 1):
        start = int(torch.randint(0, 3, (1,), generator=g))
        routable[b, start:start + int(torch.randint(4, seq - 3, (1,), generator=g))] = True
    return routable


# -- pure tensor functions -------------------------------------------------------------------------
@pytest.mark.parametrize("ratio", [0.0, 0.34, 0.5, 0.9])
@pytest.mark.parametrize("seed", range(4))
def test_topk_keep_mask_equals_rank_reference_with_ties_and_ragged_rows(ratio, seed):
    scores, routable = tied_scores(5, 23, seed), ragged_routable(5, 23, seed)
    n = routable.sum(dim=1)
    n_keep = n - torch.floor(n.double() * ratio).long()
    keep = topk_keep_mask(scores, routable, ratio)
    assert torch.equal(keep, reference_keep(scores, routable, n_keep))
    # The host-side skip counts are the ones the mask realises.
    assert (routable & ~keep).sum(dim=1).tolist() == topk_skip_counts(n.tolist(), ratio)


@pytest.mark.parametrize("seed", range(4))
def test_ranked_keep_mask_equals_rank_reference(seed):
    scores, routable = tied_scores(5, 23, seed), ragged_routable(5, 23, seed)
    n_keep = torch.tensor([0, 3, 7, 23, 5])
    assert torch.equal(ranked_keep_mask(scores, routable, n_keep), reference_keep(scores, routable, n_keep, True))


@pytest.mark.parametrize("seed", range(4))
def test_selection_index_equals_argsort_reference(seed):
    g = torch.Generator().manual_seed(seed)
    keep = torch.rand(6, 17, generator=g) < 0.6
    keep[0] = True  # a row that keeps everything
    keep[1] = False  # and one that keeps nothing
    expected_index, expected_valid = reference_index(keep)
    for counts in (None, keep.sum(dim=1).tolist()):  # read from the device, or given by the caller
        sel = selection_from_keep_mask(keep, counts)
        assert torch.equal(sel.index, expected_index), "same order, filler slots included"
        assert torch.equal(sel.valid, expected_valid)
        assert sel.counts == keep.sum(dim=1).tolist()


def test_selection_without_filler_or_with_every_token():
    keep = torch.tensor([[1, 0, 1, 1, 0], [0, 1, 1, 0, 1]], dtype=torch.bool)
    sel = selection_from_keep_mask(keep)
    assert sel.valid is None, "every row keeps 3: nothing to mask"
    assert sel.index.tolist() == [[0, 2, 3], [1, 2, 4]]
    every = selection_from_keep_mask(torch.ones(2, 5, dtype=torch.bool))
    assert every.index is None and every.valid is None
    x = torch.randn(2, 5, 3)
    assert every.take(x) is x and every.put(x, x + 1).equal(x + 1)


@pytest.mark.parametrize("shared_table", [False, True])
def test_gather_and_scatter_equal_torch_gather_scatter_values_and_gradients(shared_table):
    g = torch.Generator().manual_seed(0)
    keep = torch.rand(3, 11, generator=g) < 0.5
    keep[:, 0] = True
    sel = selection_from_keep_mask(keep)
    index, valid = sel.index, sel.valid
    x = torch.randn(1 if shared_table else 3, 11, 4, generator=g, requires_grad=True)
    values = torch.randn(3, index.shape[1], 4, generator=g, requires_grad=True)

    def reference(x, values):
        full = x.expand(3, -1, -1)
        expand = index.unsqueeze(-1).expand(-1, -1, 4)
        taken = full.gather(1, expand)
        written = full.scatter(1, expand, torch.where(valid.unsqueeze(-1), values, taken))
        return taken, written

    ours = gather_tokens(x, index), scatter_tokens(x.expand(3, -1, -1), index, values, valid)
    ref = reference(x, values)
    for a, b in zip(ours, ref):
        assert torch.equal(a, b)
    grads = [torch.autograd.grad(sum((o * w).sum() for o, w in zip(out, (1.5, -0.5))), (x, values))
             for out in (ours, ref)]
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert torch.equal(sel.take(x), ref[0]) and torch.equal(sel.put(x.expand(3, -1, -1), values), ref[1])


# -- the layer: fast paths against the general path -------------------------------------------------------
def mod_model(base, **options):
    options.setdefault("skip_ratio", 0.5)
    return convert_to_mod(copy.deepcopy(base), [1, 2], **options).eval()


def force_general_path(monkeypatch):
    """The reference: counts read from the device, and every step routed through gather/scatter."""
    monkeypatch.setattr(MoDDecoderLayer, "keeps_every_token", lambda self, ctx: False)
    monkeypatch.setattr("gamma_mod.mod.strategies.RoutingStrategy.topk_kept_counts", lambda self, *a: None)


def run_all(model, ids, mask, pixels, labels):
    """Prefill logits and stats, training loss and gradients, cached generation and its scores."""
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, pixel_values=pixels)
    result = {"logits": out.logits, "stats": dict(model.last_routing_stats)}
    gen = model.generate(input_ids=ids, attention_mask=mask, pixel_values=pixels, max_new_tokens=4, do_sample=False,
                         suppress_tokens=[IMAGE_TOKEN], output_scores=True, return_dict_in_generate=True)
    result["tokens"], result["scores"] = gen.sequences, torch.stack(gen.scores)
    train = copy.deepcopy(model).train()
    loss = train(input_ids=ids, attention_mask=mask, pixel_values=pixels, labels=labels)
    loss.loss.backward()
    result["loss"], result["routing_loss"] = loss.loss.detach(), loss.routing_loss
    result["grads"] = {n: p.grad for n, p in train.named_parameters() if p.grad is not None}
    return result


@pytest.mark.parametrize("options, padding_side", [
    (dict(), "right"), (dict(), "left"), (dict(skip_ratio=0.0), "left"), (dict(mod_mode="dense"), "left"),
    (dict(router_weighting="straight_through"), "right"), (dict(router_weighting="none"), "left"),
    (dict(strategy="pmod"), "left"), (dict(strategy="pmod"), "right"),
])
@pytest.mark.parametrize("ties", [False, True])
def test_fast_paths_equal_general_path(tiny_model, monkeypatch, options, padding_side, ties):
    model = mod_model(tiny_model, **options)
    router = model.model.layers[1].router
    with torch.no_grad():
        for p in router.parameters():
            # ties: every router score equal, so the tie rule alone picks the kept tokens
            p.zero_() if ties else torch.nn.init.normal_(p, std=0.5)
    ids, mask, pixels = multimodal_batch(batch=3, question_lengths=(4, 7, 5), padding_side=padding_side)
    labels = ids.masked_fill(ids == IMAGE_TOKEN, -100).masked_fill(mask == 0, -100)
    fast = run_all(model, ids, mask, pixels, labels)
    force_general_path(monkeypatch)
    general = run_all(model, ids, mask, pixels, labels)
    for key in ("logits", "tokens", "loss", "stats"):
        assert (torch.equal(fast[key], general[key]) if torch.is_tensor(fast[key]) else fast[key] == general[key]), key
    assert (fast["routing_loss"] is None) == (general["routing_loss"] is None)
    if fast["routing_loss"] is not None:
        assert torch.equal(fast["routing_loss"], general["routing_loss"])
    assert fast["grads"].keys() == general["grads"].keys()
    for name in fast["grads"]:
        assert torch.equal(fast["grads"][name], general["grads"][name]), name
    # Decode logits: the fast step attends without a mask over an all-real kept cache where the general
    # path passes an all-zero additive mask; SDPA may then take another kernel (last-bit differences).
    torch.testing.assert_close(fast["scores"], general["scores"], rtol=0, atol=1e-5)


def test_equal_length_rows_need_no_mask_no_filler_and_no_device_reads(tiny_model, monkeypatch):
    """Top-k prefill of rows with equal routable counts: one device read per forward (the routable counts),
    none per layer, and no attention mask (SDPA's causal kernel)."""
    model = mod_model(tiny_model)
    layer = model.model.layers[1]
    torch.manual_seed(0)
    h = torch.randn(2, 12, 64)
    cos_sin = model.model.rotary_emb(h, torch.arange(12).unsqueeze(0))
    routable = torch.zeros(2, 12, dtype=torch.bool)
    routable[:, :8] = True
    masks = []
    original = MoDDecoderLayer.attention_mask_for_selection

    def spy(self, *args):
        mask, valid = original(self, *args)
        masks.append((mask, valid))
        return mask, valid

    monkeypatch.setattr(MoDDecoderLayer, "attention_mask_for_selection", spy)
    reads = []
    for name in ("item", "tolist", "__bool__", "__int__"):
        real = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda self, *a, _n=name, _r=real: (reads.append(_n), _r(self, *a))[1])
    ctx = ModForwardContext(routable=routable)
    with torch.no_grad():
        layer(h, position_embeddings=cos_sin, mod_context=ctx)
        first = len(reads)
        layer(h, position_embeddings=cos_sin, mod_context=ctx)  # a second MoD layer of the same forward
    assert first == 1 and len(reads) == first, reads
    assert masks == [(None, None), (None, None)]
    assert (ctx.stats[1].routable, ctx.stats[1].skipped) == (16, 8)
    assert ctx.stats[1].keep[:, 8:].all() and ctx.stats[1].keep.sum(dim=1).tolist() == [8, 8]


@pytest.mark.parametrize("strategy", ["gamma", "pmod"])
def test_step_without_routable_tokens_is_the_dense_layer(tiny_model, strategy):
    """Nothing routable (a decode step): no gather/scatter, and the router runs only where its output is
    used; p-MoD (weight 1 off the vision tokens) and gamma with router_weighting none are the dense layer."""
    options = dict(strategy=strategy) if strategy == "pmod" else dict(router_weighting="none")
    model = mod_model(tiny_model, **options)
    layer = model.model.layers[1]
    calls = []
    layer.router.register_forward_hook(lambda *a: calls.append(1))
    torch.manual_seed(1)
    h = torch.randn(2, 7, 64)
    cos_sin = model.model.rotary_emb(h, torch.arange(7).unsqueeze(0))
    ctx = ModForwardContext(routable=torch.zeros(2, 7, dtype=torch.bool))
    dense = copy.deepcopy(tiny_model.model.layers[1])
    dense.load_state_dict({k: v for k, v in layer.state_dict().items() if not k.startswith("router.")})
    with torch.no_grad():
        out = layer(h, position_embeddings=cos_sin, mod_context=ctx)
        expected = dense(h, position_embeddings=cos_sin)
    assert torch.equal(out, expected)
    assert not calls, "the router's output is unused here"
    assert ctx.stats[1].keep.all() and (ctx.stats[1].routable, ctx.stats[1].skipped) == (0, 0)


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_decode_step_mask_only_where_the_kept_cache_has_filler(tiny_model, monkeypatch, padding_side):
    """Decode over a kept cache of real keys only needs no mask; after a ragged or padded prefill it does,
    and either way a cached decode step equals recomputing the whole sequence without a cache."""
    model = mod_model(tiny_model)
    masks = []
    original = MoDDecoderLayer.attention_mask_for_selection

    def spy(self, *args):
        mask, valid = original(self, *args)
        masks.append(mask)
        return mask, valid

    monkeypatch.setattr(MoDDecoderLayer, "attention_mask_for_selection", spy)
    for lengths, needs_mask in (((5, 5), False), ((4, 7), True)):
        ids, mask, pixels = multimodal_batch(batch=2, question_lengths=lengths, padding_side=padding_side)
        with torch.no_grad():
            out = model(input_ids=ids, attention_mask=mask, pixel_values=pixels, use_cache=True)
            new = torch.tensor([[11], [12]])
            masks.clear()
            step = model(input_ids=new, attention_mask=torch.cat([mask, torch.ones(2, 1, dtype=torch.long)], 1),
                         cache=out.cache, use_cache=True, mod_decode_start=ids.shape[1])
            assert all((m is not None) == needs_mask for m in masks) and len(masks) == 2
            full_ids = torch.cat([ids, new], 1)
            full_mask = torch.cat([mask, torch.ones(2, 1, dtype=torch.long)], 1)
            full = model(input_ids=full_ids, attention_mask=full_mask, pixel_values=pixels,
                         mod_decode_start=ids.shape[1])
        torch.testing.assert_close(step.logits[:, -1], full.logits[:, -1], rtol=0, atol=1e-5)


def test_routing_stats_are_read_lazily():
    stats = {3: LayerRoutingStats(torch.tensor(10), torch.tensor(4)), 5: LayerRoutingStats(7, 0)}
    counts = RoutingCounts(stats)
    assert len(counts) == 2 and list(counts) == [3, 5]
    assert isinstance(stats[3]._routable, torch.Tensor), "nothing read before someone looks"
    assert counts[3] == (10, 4) and type(counts[3][0]) is int and dict(counts) == {3: (10, 4), 5: (7, 0)}


def test_kept_cache_validity_keeps_a_count_until_a_slot_is_filler():
    cache = DynamicCache()
    append_key_validity(cache, 1, None, batch=2, width=3)
    append_key_validity(cache, 1, None, batch=2, width=1)
    record = key_validity_record(cache, 1)
    assert record.mask is None and record.length == 4
    assert cached_key_validity(cache, 1).tolist() == [[True] * 4] * 2
    append_key_validity(cache, 1, torch.tensor([[True, False], [True, True]]), batch=2, width=2)
    append_key_validity(cache, 1, None, batch=2, width=1)
    assert cached_key_validity(cache, 1).tolist() == [[True] * 4 + [True, False, True], [True] * 7]
    assert cached_key_validity(cache, 2) is None and cached_key_validity(None, 1) is None


def test_decode_step_mask_is_the_real_cached_keys_and_the_token_itself(tiny_model):
    model = mod_model(tiny_model)
    layer = model.model.layers[1]
    cache = DynamicCache()
    past = torch.tensor([[False, True, True, False], [True, True, True, True]])
    append_key_validity(cache, 1, past, batch=2, width=4)
    step = selection_from_keep_mask(torch.ones(2, 1, dtype=torch.bool))
    ctx = ModForwardContext(routable=torch.zeros(2, 1, dtype=torch.bool))
    mask, valid = layer.attention_mask_for_selection(step, ctx, cache, 1, torch.float32)
    expected = torch.zeros(2, 1, 1, 5).masked_fill(~torch.cat([past, torch.ones(2, 1, dtype=torch.bool)], 1)
                                                    .view(2, 1, 1, 5), torch.finfo(torch.float32).min)
    assert valid is None and torch.equal(mask, expected)
    # A two-token step over the same cache: causal among the new tokens, padding of the step masked.
    two = selection_from_keep_mask(torch.ones(2, 2, dtype=torch.bool))
    ctx = ModForwardContext(routable=torch.zeros(2, 2, dtype=torch.bool), attention_mask=torch.tensor([[1, 1], [0, 1]]))
    mask, valid = layer.attention_mask_for_selection(two, ctx, cache, 2, torch.float32)
    allowed = torch.tensor([[[0, 1, 1, 0, 1, 0], [0, 1, 1, 0, 1, 1]],
                            [[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 0, 1]]], dtype=torch.bool)
    assert valid.tolist() == [[True, True], [False, True]]
    assert torch.equal(mask, torch.zeros(2, 1, 2, 6).masked_fill(~allowed.unsqueeze(1), torch.finfo(torch.float32).min))
