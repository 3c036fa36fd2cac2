"""Pruning inside the decoder loop: which tokens each layer sees, at which positions, with which mask.

One `PruneSession` per model forward (GammaLlamaModel.forward):

    for i, layer in enumerate(layers):
        hidden, kwargs = session.before_layer(i, layer, hidden, kwargs)  # rank, drop, re-mask
        hidden = layer(hidden, **kwargs)                                  # (B, K, C): present tokens only
    hidden = session.finish(hidden)                                       # back to (B, T, C)

State: `index` (B, K) the step's tokens still present, in original order, and `valid` (B, K) False
for filler slots of rows that kept fewer (None/None before the first drop: every token). After a
drop each layer gets the gathered hidden states, RoPE tables at the ORIGINAL positions and a mask
over the present tokens; a dense layer's KV cache then holds only those, and the validity of each
cached slot is recorded on the cache (gamma_mod/mod/cache.py), so that decode steps, which drop
nothing, mask the filler and padding slots of the shorter caches. MoD layers get the gathered
ModForwardContext and mask themselves. A dropped token's output is its hidden state at the drop
(its logits are never used: generate() reads the last position, which is never dropped).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

from ..mod.cache import append_key_validity, cached_key_validity
from ..mod.routing import gather_tokens, padded_selection, scatter_tokens
from .base import TokenPruner
from .ranking import keep_top_scoring, layer_key_attention, query_mask

# Dense layers whose cache holds only the present tokens (their validity is on the cache).
_PRUNED_LAYERS_ATTR = "_gamma_mod_pruned_layers"


@dataclass
class PruneStats:
    """What one forward pruned; per row so that per-sample FLOPs keep the T^2 term exact."""

    image_tokens: torch.Tensor  # (B,) image tokens of the step
    layer_tokens: list[torch.Tensor] = field(default_factory=list)  # per layer (B,): real tokens it processed
    kept_image: dict[int, torch.Tensor] = field(default_factory=dict)  # stage layer -> (B,) image tokens kept
    present: torch.Tensor | None = None  # (B, T) tokens still present in the last layer


def causal_mask_over_present(key_valid: torch.Tensor, past_valid: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """Additive mask (B, 1, K, S + K): past slots where valid, present tokens causally where valid.
    Every query sees itself, so filler/padding rows stay finite (their outputs are discarded)."""
    width = key_valid.shape[1]
    eye = torch.eye(width, dtype=torch.bool, device=key_valid.device)
    causal = torch.ones_like(eye).tril()
    allowed = (causal.unsqueeze(0) & key_valid.unsqueeze(1)) | eye  # (B, K, K)
    if past_valid is not None:
        allowed = torch.cat([past_valid.unsqueeze(1).expand(-1, width, -1), allowed], dim=2)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return mask.masked_fill(~allowed, torch.finfo(dtype).min).unsqueeze(1)


class PruneSession:
    def __init__(self, pruner: TokenPruner, *, is_image: torch.Tensor, step_mask: torch.Tensor | None,
                 queries: torch.Tensor, cache, attn_implementation: str) -> None:
        self.pruner = pruner
        self.stages = pruner.stages()
        self.drop_at = {stage.layer: s for s, stage in enumerate(self.stages)}
        self.rank_at = {stage.rank_layer: s for s, stage in enumerate(self.stages)}
        self.step_mask = step_mask  # (B, T) as given (for MoD contexts), or None
        self.real = step_mask.bool() if step_mask is not None else torch.ones_like(is_image)
        self.is_image = is_image & self.real
        self.queries = queries
        self.cache = cache
        self.sdpa = attn_implementation == "sdpa"
        self.index: torch.Tensor | None = None
        self.valid: torch.Tensor | None = None
        self.full_hidden: torch.Tensor | None = None
        self.scores: dict[int, torch.Tensor] = {}
        self.n_keep: dict[int, torch.Tensor] = {}
        self.stats = PruneStats(image_tokens=self.is_image.sum(dim=1))
        self._rope: tuple[object, tuple[torch.Tensor, torch.Tensor]] | None = None  # (tables, present tables)
        self._stats_to_remap: list[tuple[dict, int, torch.Tensor, torch.Tensor]] = []

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def start(cls, pruner: TokenPruner, *, hidden: torch.Tensor, input_ids: torch.Tensor | None,
              image_token: int | None, step_mask: torch.Tensor | None, past: int, decode_start: int | None,
              labels: torch.Tensor | None, cache, attn_implementation: str) -> "PruneSession | None":
        """A session for this forward (`hidden`: the (B, T, C) inputs), or None when it has nothing to
        prune and no pruned cache to mask. `step_mask`: (B, T) 1 for real tokens of this step."""
        if attn_implementation.startswith("flash"):
            raise ValueError(f"token pruner {pruner.describe()}: attention {attn_implementation!r} takes no custom masks "
                             "over the pruned tokens; load the model with attn_implementation 'sdpa' or 'eager'")
        if input_ids is not None and image_token is not None:
            is_image = input_ids == image_token
        else:
            is_image = torch.zeros(hidden.shape[:2], dtype=torch.bool, device=hidden.device)
        real = step_mask.bool() if step_mask is not None else torch.ones_like(is_image)
        has_images = bool((is_image & real).any())
        pruned_cache = bool(getattr(cache, _PRUNED_LAYERS_ATTR, None))
        if not has_images and not pruned_cache:
            return None
        if has_images and past > 0:
            raise ValueError(f"token pruner {pruner.describe()}: image tokens in a step after {past} cached tokens; "
                             "pruning ranks the image tokens of a prefill (give the whole prompt in one step)")
        length = is_image.shape[1]
        absolute = torch.arange(past, past + length, device=is_image.device)
        prompt = real & (absolute < decode_start).unsqueeze(0) if decode_start is not None else real
        queries = query_mask(pruner.query, prompt, is_image, labels)
        return cls(pruner, is_image=is_image, step_mask=step_mask, queries=queries, cache=cache,
                   attn_implementation=attn_implementation)

    # -- the loop -----------------------------------------------------------------------------
    def before_layer(self, i: int, layer, hidden: torch.Tensor, kwargs: dict) -> tuple[torch.Tensor, dict]:
        """Rank and drop as the stages say, then the layer's inputs over the present tokens.
        `kwargs` are the model's un-pruned layer arguments (attention_mask, position_embeddings,
        position_ids and, for MoD layers, mod_context)."""
        s = self.drop_at.get(i)
        if s is not None and s in self.scores and self.stages[s].rank_layer < i:
            hidden = self._drop(s, hidden)
        r = self.rank_at.get(i)
        if r is not None and self._will_drop(r):
            cos, sin = self._present_rope(kwargs["position_embeddings"])
            self.scores[r] = layer_key_attention(layer, hidden, cos, sin, self._present(self.queries),
                                                 self._present_real())
            if self.stages[r].rank_layer == self.stages[r].layer:
                hidden = self._drop(r, hidden)
        kwargs = self._layer_kwargs(i, kwargs, hidden.dtype)
        self.stats.layer_tokens.append(self._present_real().sum(dim=1))
        return hidden, kwargs

    def finish(self, hidden: torch.Tensor) -> torch.Tensor:
        """(B, K, C) last-layer output -> (B, T, C); MoD layers' keep masks back in step coordinates."""
        for stats, layer_idx, index, valid in self._stats_to_remap:
            keep = stats[layer_idx].keep
            full = torch.zeros(self.real.shape, dtype=torch.bool, device=keep.device)
            stats[layer_idx].keep = full.scatter(1, index, keep & valid)
        if self.index is None:
            self.stats.present = torch.ones_like(self.real)
            return hidden
        self.stats.present = torch.zeros_like(self.real).scatter(1, self.index, self.valid)
        return scatter_tokens(self.full_hidden, self.index, hidden, self.valid)

    # -- ranking and dropping -----------------------------------------------------------------
    def _will_drop(self, s: int) -> bool:
        """Whether stage s removes anything (else it is skipped, ranking included: R=0 is exactly dense)."""
        self.n_keep[s] = self.pruner.keep_counts(self.stats.image_tokens, s)
        present = (self._present(self.is_image) & self._present_real() & ~self._present(self.queries)).sum(dim=1)
        return bool((self.n_keep[s] < present).any())

    def _drop(self, s: int, hidden: torch.Tensor) -> torch.Tensor:
        scores = self.scores.pop(s)
        image = self._present(self.is_image) & self._present_real()
        # The ranking queries themselves never leave (the prompt's last token produces the next logits).
        candidates = image & ~self._present(self.queries)
        keep = keep_top_scoring(scores, candidates, self.n_keep[s])
        if self.valid is not None:
            keep &= self.valid
        self.full_hidden = hidden if self.index is None else scatter_tokens(self.full_hidden, self.index, hidden, self.valid)
        chosen = padded_selection(keep)
        self.index = chosen.index if self.index is None else self.index.gather(1, chosen.index)
        self.valid = chosen.valid
        self.stats.kept_image[self.stages[s].layer] = (keep & image).sum(dim=1)
        return gather_tokens(hidden, chosen.index)

    # -- per-layer inputs over the present tokens ---------------------------------------------
    def _present(self, full: torch.Tensor) -> torch.Tensor:
        if self.index is None:
            return full
        return gather_tokens(full.expand(self.index.shape[0], *full.shape[1:]), self.index)

    def _present_real(self) -> torch.Tensor:
        real = self._present(self.real)
        return real if self.valid is None else real & self.valid

    def _present_rope(self, cos_sin: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """RoPE tables (B or 1, T, D) at the present tokens' original positions; gathered once per drop."""
        if self.index is None:
            batch = self.real.shape[0]
            return tuple(t.expand(batch, *t.shape[1:]) for t in cos_sin)
        if self._rope is None or self._rope[0] is not self.index:
            self._rope = (self.index, (self._present(cos_sin[0]), self._present(cos_sin[1])))
        return self._rope[1]

    def _layer_kwargs(self, i: int, kwargs: dict, dtype: torch.dtype) -> dict:
        pruned = self.index is not None
        kwargs = dict(kwargs)
        if "mod_context" in kwargs:
            if pruned:
                ctx = kwargs["mod_context"]
                kwargs["mod_context"] = self._mod_context(ctx)
                self._stats_to_remap.append((ctx.stats, i, self.index, self.valid))
        elif pruned or i in self._pruned_layers():
            kwargs["attention_mask"] = self._dense_mask(i, dtype)
        if pruned:
            kwargs["position_embeddings"] = self._present_rope(kwargs["position_embeddings"])
            position_ids = kwargs.get("position_ids")
            if position_ids is not None:
                kwargs["position_ids"] = self._present(position_ids)
        return kwargs

    def _pruned_layers(self) -> set[int]:
        return getattr(self.cache, _PRUNED_LAYERS_ATTR, set()) if self.cache is not None else set()

    def _dense_mask(self, i: int, dtype: torch.dtype) -> torch.Tensor | None:
        key_valid = self._present_real()
        past_valid = None
        if self.cache is not None:
            past_valid = cached_key_validity(self.cache, i, key_valid.device)
            append_key_validity(self.cache, i, key_valid, key_valid.shape[0], key_valid.shape[1])
            if not hasattr(self.cache, _PRUNED_LAYERS_ATTR):
                setattr(self.cache, _PRUNED_LAYERS_ATTR, set())
            getattr(self.cache, _PRUNED_LAYERS_ATTR).add(i)
        if past_valid is None and self.sdpa and bool(key_valid.all()):
            return None  # plain causal attention: SDPA's causal kernel, no mask tensor
        return causal_mask_over_present(key_valid, past_valid, dtype)

    def _mod_context(self, ctx):
        valid = self.valid

        def present(x):
            return None if x is None else self._present(x)

        step_mask = present(self.step_mask)
        step_mask = valid.long() if step_mask is None else step_mask * valid
        return dataclasses.replace(
            ctx, routable=present(ctx.routable) & valid,
            decode=None if ctx.decode is None else present(ctx.decode) & valid,
            attention_mask=step_mask, position_ids=present(ctx.position_ids), labels=present(ctx.labels),
        )
