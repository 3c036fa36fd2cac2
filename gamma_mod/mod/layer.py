"""MoD over a decoder layer: the layer only processes the tokens its router keeps.

`MoDLayerMixin` turns any transformers decoder layer with the usual parts (`input_layernorm`,
`self_attn`, `post_attention_layernorm`, `mlp`: Llama, Qwen2, Qwen2.5-VL, Qwen3-VL, ...) into a MoD
layer: `mod_layer_class(DenseLayer)` is `class MoD<DenseLayer>(MoDLayerMixin, DenseLayer)` (same
parameters, same state-dict names, plus `router.*`), so a dense layer converts by loading its state
dict. `MoDDecoderLayer` is the Llama one (our LLaVA fork). Per forward:

    scores  = router(input_layernorm(h))                 (B, T, 2)  [strategy decides the input]
    keep    = top-k over routable tokens (+ all others)   (B, T)
    h_k     = gather(h, keep)                             (B, K, C)  original order, original RoPE positions
    h_k     = h_k + self_attn(norm(h_k))                  the layer's OWN attention (q/k/v/o, q/k norms, GQA,
                                                          rotary) with (cos, sin) gathered at the kept tokens
                                                          and our kept-token mask: causal, padding respected
    h_k     = h_k + w * mlp(norm(h_k))                    w from the strategy (gamma: router prob p, MLP branch)
    h       = scatter(h, keep, h_k)                       skipped tokens pass unchanged (p-MoD: x w)

The rotary tables (cos, sin) the model hands its layers are (B or 1, T, D) for every family we
wrap (Qwen's multimodal M-RoPE sections are merged before the layers in transformers 5.x), so
gathering them along T gives the kept tokens' original (multimodal) positions. Attention runs with
SDPA or eager; a flash-attention model gives its MoD layers SDPA (flash takes no arbitrary mask),
dense layers keep flash. A MoD layer's KV cache holds only its kept tokens (gamma_mod/mod/cache.py
records which cached slots are real).

When every token of a forward goes through the layer (decode steps, which carry no routable token;
`mod_mode: dense`) there is nothing to gather or scatter: the layer runs on the sequence itself,
the router only where its output is used (the MLP weight, the routing loss). Counts the layer needs
on the host (kept tokens per row) come from the routable counts, read once per forward for all MoD
layers, so top-k routing costs no device sync per layer.

The per-forward `ModForwardContext` reaches a MoD layer as the `mod_context` keyword (our fork's
model loop passes it) or, for models whose own layer loop we do not rewrite (the Hugging Face
families), through a `ModContextHolder` the model fills before running its layers; it is bound when
the layer is called, so a gradient-checkpointing recompute sees the same context.

With `mod.compat: official` the keep rule, the kept tokens' positions (renumbered 0..k-1) and the
routing-loss scope are the released code's (gamma_mod/mod/compat.py); the rest is shared.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers.models.llama.modeling_llama import LlamaDecoderLayer

from .cache import append_key_validity, cached_key_validity, key_validity_record
from .compat import (
    official_decode_tokens,
    official_inference_keep,
    official_positions,
    official_train_keep,
)
from .config import ModConfig
from .routing import (
    TokenSelection,
    all_tokens_selection,
    selection_from_keep_mask,
    threshold_keep_mask,
)
from .strategies import RoutingStrategy


class LayerRoutingStats:
    """What one MoD layer did in the last forward.

    routable / skipped: token counts over the batch (ints). They may be handed over as 0-dim device
    tensors and are then read on first access, so that the forward never waits for the device.
    loss: routing loss of this layer (mean CE over routable tokens); None when nothing is routable.
    keep: (B, T) which tokens went through the layer (for skip maps and speed reports).
    """

    def __init__(self, routable: int | torch.Tensor, skipped: int | torch.Tensor,
                 loss: torch.Tensor | None = None, keep: torch.Tensor | None = None) -> None:
        self._routable = routable
        self._skipped = skipped
        self.loss = loss
        self.keep = keep

    @property
    def routable(self) -> int:
        if not isinstance(self._routable, int):
            self._routable = int(self._routable)
        return self._routable

    @property
    def skipped(self) -> int:
        if not isinstance(self._skipped, int):
            self._skipped = int(self._skipped)
        return self._skipped

    def __repr__(self) -> str:
        return f"LayerRoutingStats(routable={self.routable}, skipped={self.skipped})"


class RoutingCounts(Mapping):
    """{layer: (routable, skipped)} over a forward's stats, read from the device only when looked at."""

    def __init__(self, stats: dict[int, LayerRoutingStats]) -> None:
        self._stats = stats

    @property
    def layer_stats(self) -> dict[int, LayerRoutingStats]:
        """{layer: LayerRoutingStats} (keep masks included: per-row token counts for TFLOPs)."""
        return dict(self._stats)

    def __getitem__(self, layer: int) -> tuple[int, int]:
        s = self._stats[layer]
        return s.routable, s.skipped

    def __iter__(self) -> Iterator[int]:
        return iter(self._stats)

    def __len__(self) -> int:
        return len(self._stats)

    def __repr__(self) -> str:
        return repr(dict(self.items()))


@dataclass
class ModForwardContext:
    """Per-forward routing inputs shared by all MoD layers, built once by the model.

    routable:       (B, T) tokens that prefill routing may skip (system prompt + image tokens).
    decode:         (B, T) tokens being generated (decode rule applies), or None.
    attention_mask: (B, T) 1 for real tokens of THIS forward's inputs, or None.
    stats:          filled by each MoD layer, keyed by layer index (a recompute overwrites).
    Official compat mode only (gamma_mod/mod/compat.py):
    rotary:         the model's rotary embedding, `rotary(x, position_ids) -> (cos, sin)`, for renumbered positions.
    position_ids:   (B or 1, T) original positions (mgm decode tokens keep theirs).
    labels:         (B, T) training labels (the mgm layout's text-only rule), or None.
    The inputs must not change during the forward: what the layers need of them on the host (routable
    counts, whether there is padding) is read from the device once and shared.
    """

    routable: torch.Tensor
    decode: torch.Tensor | None = None
    attention_mask: torch.Tensor | None = None
    stats: dict[int, LayerRoutingStats] = field(default_factory=dict)
    rotary: Callable | None = None
    position_ids: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    _host: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def routing_loss(self) -> torch.Tensor | None:
        losses = [s.loss for s in self.stats.values() if s.loss is not None]
        return torch.stack(losses).sum() if losses else None

    def routable_counts(self) -> list[int]:
        """Routable tokens per row (host ints), read once per forward."""
        if "routable_counts" not in self._host:
            self._host["routable_counts"] = self.routable.sum(dim=1).tolist()
        return self._host["routable_counts"]

    def any_routable(self) -> bool:
        return any(self.routable_counts())

    def has_padding(self) -> bool:
        """Whether some token of this forward's inputs is padding (attention_mask 0), read once per forward."""
        if "has_padding" not in self._host:
            mask = self.attention_mask
            self._host["has_padding"] = mask is not None and not bool(mask.bool().all())
        return self._host["has_padding"]

    def all_tokens_selection(self, batch: int, seq: int, device) -> TokenSelection:
        """The every-token selection, one per forward for all MoD layers that keep every token."""
        if "all_tokens" not in self._host:
            self._host["all_tokens"] = all_tokens_selection(batch, seq, device)
        return self._host["all_tokens"]

    def routable_flat_index(self) -> torch.Tensor:
        """Positions of the routable tokens in the flattened (B*T) batch, row-major (as `x[routable]` takes them)."""
        if "routable_flat_index" not in self._host:
            self._host["routable_flat_index"] = self.routable.reshape(-1).nonzero().squeeze(1)
        return self._host["routable_flat_index"]


class ModContextHolder:
    """The current forward's ModForwardContext, shared by a model and its MoD layers (set by the model's
    forward before its layers run; None outside a forward)."""

    def __init__(self) -> None:
        self.context: ModForwardContext | None = None


class _SdpaForFlashConfig:
    """A view of a layer's config whose `_attn_implementation` is "sdpa" wherever the model's is neither
    eager nor SDPA (flash attention and friends take no arbitrary mask; our kept-token mask needs one).
    Everything else, writes included, goes to the model's config, so switching the model's attention
    later still reaches the MoD layers."""

    def __init__(self, config) -> None:
        object.__setattr__(self, "_wrapped", config)

    @property
    def _attn_implementation(self) -> str:
        impl = self._wrapped._attn_implementation
        return impl if impl in ("eager", "sdpa") else "sdpa"

    def __getattr__(self, name: str):
        if name == "_wrapped":  # during unpickling / deepcopy, before __init__ ran
            raise AttributeError(name)
        return getattr(self._wrapped, name)

    def __setattr__(self, name: str, value) -> None:
        setattr(self._wrapped, name, value)


class MoDLayerMixin:
    """Routing, gather/scatter and kept-token attention over a dense decoder layer (see module docstring).
    Use through `mod_layer_class(DenseLayer)`; the dense layer must be built as `Dense(config, layer_idx)`."""

    def __init__(self, config, layer_idx: int, mod: ModConfig, strategy: RoutingStrategy, router: nn.Module,
                 context_holder: ModContextHolder | None = None) -> None:
        super().__init__(config, layer_idx)
        self.layer_idx = layer_idx
        self.mod = mod
        self.strategy = strategy
        # With a shared router every MoD layer holds the same module: one parameter, and the state
        # dict still names it `model.layers.{i}.router.weight` per layer like the released checkpoints.
        self.router = router
        # Not a submodule (no parameters, not in the state dict): the model sets its context per forward.
        self.context_holder = context_holder
        self.self_attn.config = _SdpaForFlashConfig(self.self_attn.config)

    def __call__(self, *args, **kwargs):
        # Bind the holder's context now: a gradient-checkpointing recompute replays these kwargs later.
        if kwargs.get("mod_context") is None and self.context_holder is not None:
            kwargs["mod_context"] = self.context_holder.context
        return super().__call__(*args, **kwargs)

    # -- routing -----------------------------------------------------------------------------
    def decode_rule_applies(self, ctx: ModForwardContext) -> bool:
        """Whether the official decode rule may skip a generated token of this forward."""
        return ctx.decode is not None and self.mod.decode == "threshold" and not self.mod.keeps_all_tokens

    def keeps_every_token(self, ctx: ModForwardContext) -> bool:
        """True when no token of this forward can skip the layer: nothing routable and no decode rule
        (every decode step by default), or `mod_mode: dense`."""
        return self.mod.keeps_all_tokens or (not ctx.any_routable() and not self.decode_rule_applies(ctx))

    def select_tokens(self, logits: torch.Tensor, score: torch.Tensor, ctx: ModForwardContext) -> TokenSelection:
        """Our rules: top-k (or the threshold prefill), then the optional decode rule. score: the strategy's
        selection score of `logits` (B, T)."""
        routable = ctx.routable
        ratio = self.mod.layer_skip_ratio(self.layer_idx)
        counts = None
        if self.mod.prefill == "threshold" and not self.training:
            keep = threshold_keep_mask(score, routable, self.mod.prefill_threshold)
        else:
            n_routable = ctx.routable_counts()
            keep = self.strategy.topk_keep(logits, routable, ratio, ctx.attention_mask, n_routable=n_routable, score=score)
            counts = self.strategy.topk_kept_counts(n_routable, routable.shape[1], ratio)
        if self.decode_rule_applies(ctx):
            # Official decode rule: a generated token skips the layer when its score is below 0.5.
            keep = keep & ~(ctx.decode & (score < self.mod.decode_threshold))
            counts = None
        if self.mod.keeps_all_tokens:
            keep, counts = torch.ones_like(keep), [keep.shape[1]] * keep.shape[0]
        return selection_from_keep_mask(keep, counts)

    def select_tokens_official(self, logits: torch.Tensor, ctx: ModForwardContext) -> tuple[TokenSelection, torch.Tensor]:
        """The released code's selection (compat official) and the tokens that competed in it."""
        score = self.strategy.selection_score(logits)
        layout = self.mod.official_layout or "llava_hr"
        if self.training:
            keep, competing = official_train_keep(score, self.mod.region, layout, ctx.labels)
        else:
            decode = official_decode_tokens(ctx.decode, tuple(score.shape), score.device)
            keep, competing = official_inference_keep(
                score, decode, layout, self.mod.prefill_threshold, self.mod.decode_threshold)
        if ctx.attention_mask is not None:
            competing = competing & ctx.attention_mask.bool()
        return selection_from_keep_mask(keep), competing

    def official_position_embeddings(
        self, hidden: torch.Tensor, selection: TokenSelection, ctx: ModForwardContext, cache
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """RoPE (cos, sin) at the kept tokens' renumbered positions (B, K, D)."""
        if ctx.rotary is None:
            raise ValueError(f"MoD layer {self.layer_idx}: mod.compat 'official' needs ModForwardContext.rotary "
                             "(the model's rotary embedding) for renumbered positions")
        keep_real = selection.keep
        if ctx.attention_mask is not None:
            keep_real = keep_real & ctx.attention_mask.bool()
        past_valid = cached_key_validity(cache, self.layer_idx, keep_real.device) if cache is not None else None
        past_kept = past_valid.sum(dim=1) if past_valid is not None else None
        original_at = None
        if self.mod.official_layout == "mgm" and not self.training:
            original_at = official_decode_tokens(ctx.decode, tuple(keep_real.shape), keep_real.device)
        positions = official_positions(keep_real, past_kept, ctx.position_ids, original_at)
        return ctx.rotary(hidden, selection.take(positions))

    def routing_loss(self, logits: torch.Tensor, keep: torch.Tensor, scope: torch.Tensor | None) -> torch.Tensor:
        """2-way cross-entropy of the router against this layer's own keep decision.

        scope: flat (B*T) positions of the tokens in the loss (row-major, as boolean indexing takes
        them), or None for every token.
        """
        flat_logits, target = logits.reshape(-1, logits.shape[-1]), keep.reshape(-1)
        if scope is not None:
            flat_logits, target = flat_logits.index_select(0, scope), target.index_select(0, scope)
        return nn.functional.cross_entropy(flat_logits, target.long())

    def route(
        self, hidden_states: torch.Tensor, normed: torch.Tensor, ctx: ModForwardContext
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, TokenSelection]:
        """Router logits and selection scores (None where nothing uses them) and the token selection;
        records this layer's stats in the context."""
        batch, seq = hidden_states.shape[:2]
        with_loss = torch.is_grad_enabled() and self.strategy.has_routing_loss
        if self.mod.official:
            logits = self.router(self.strategy.router_input(hidden_states, normed))  # (B, T, 2) fp32
            selection, competing = self.select_tokens_official(logits, ctx)
            # Official routing loss: every one of the B x T tokens, question and padding included.
            loss = self.routing_loss(logits, selection.keep, None) if with_loss else None
            ctx.stats[self.layer_idx] = LayerRoutingStats(competing.sum(), (competing & ~selection.keep).sum(), loss,
                                                          selection.keep.detach())
            return logits, None, selection
        n_routable = sum(ctx.routable_counts())
        with_loss = with_loss and n_routable > 0
        every = self.keeps_every_token(ctx)
        # With every token kept, the router runs only where its output is used: the weights or the loss.
        logits = score = None
        if not every or with_loss or self.strategy.weights_need_router(n_routable > 0):
            logits = self.router(self.strategy.router_input(hidden_states, normed))  # gamma (B, T, 2) fp32; pmod (B, T)
        if every:
            selection = ctx.all_tokens_selection(batch, seq, hidden_states.device)
        else:
            score = self.strategy.selection_score(logits)
            selection = self.select_tokens(logits, score, ctx)
        loss = self.routing_loss(logits, selection.keep, ctx.routable_flat_index()) if with_loss else None
        if selection.index is None:
            skipped: int | torch.Tensor = 0
        elif self.decode_rule_applies(ctx):
            skipped = (ctx.routable & ~selection.keep).sum()  # decode tokens may skip without being routable
        else:
            skipped = sum(seq - c for c in selection.counts)  # only routable tokens are ever skipped
        ctx.stats[self.layer_idx] = LayerRoutingStats(n_routable, skipped, loss, selection.keep)  # bool: no graph
        return logits, score, selection

    # -- attention over the kept tokens ------------------------------------------------------
    def attention_mask_for_selection(
        self, selection: TokenSelection, ctx: ModForwardContext, cache, width: int, dtype
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Additive mask (B, 1, K, S_past + K), or None when none is needed, and the validity (B, K) of
        the new keys (None: every new key is real).

        No mask: without a cache and without padding or filler (SDPA's causal kernel), or for a single
        query per row over a cache of real keys only (the usual decode step; it may see every key).
        """
        key_valid = selection.valid
        if ctx.has_padding():
            real = selection.take(ctx.attention_mask.bool())
            key_valid = real if key_valid is None else key_valid & real
        past = key_validity_record(cache, self.layer_idx)
        if key_valid is None and (past is None or (width == 1 and past.mask is None)):
            return None, None
        device = selection.keep.device
        batch = selection.keep.shape[0]
        if width == 1 and past is not None:
            # A decode step: the real cached keys and the token itself (as the general rule below gives).
            self_key = torch.ones(batch, 1, 1, dtype=torch.bool, device=device)
            allowed = torch.cat([past.materialise(device).unsqueeze(1), self_key], dim=2)
        else:
            new_valid = key_valid if key_valid is not None else torch.ones(batch, width, dtype=torch.bool, device=device)
            causal = torch.ones(width, width, dtype=torch.bool, device=device).tril()
            allowed = causal.unsqueeze(0) & new_valid.unsqueeze(1)  # (B, K, K)
            if past is not None:
                allowed = torch.cat([past.materialise(device).unsqueeze(1).expand(-1, width, -1), allowed], dim=2)
            # Every query may see itself, so padding/filler rows stay finite (their output is discarded).
            diag = torch.zeros_like(allowed)
            diag[..., -width:] = torch.eye(width, dtype=torch.bool, device=device)
            allowed = allowed | diag
        mask = torch.zeros(allowed.shape, dtype=dtype, device=device)
        mask = mask.masked_fill(~allowed, torch.finfo(dtype).min).unsqueeze(1)
        return mask, key_valid

    def attend_selected(
        self,
        hidden: torch.Tensor,
        cos_sin: tuple[torch.Tensor, torch.Tensor],
        selection: TokenSelection,
        ctx: ModForwardContext,
        cache,
    ) -> torch.Tensor:
        """The layer's own attention over the kept tokens' normed states (B, K, C) -> (B, K, C)."""
        attn = self.self_attn
        batch, width, _ = hidden.shape
        mask, key_valid = self.attention_mask_for_selection(selection, ctx, cache, width, hidden.dtype)
        if mask is None and width > 1 and attn.config._attn_implementation == "eager":
            # Eager attention has no causal flag (SDPA uses its causal kernel when the mask is None).
            mask = torch.full((width, width), torch.finfo(hidden.dtype).min, dtype=hidden.dtype,
                              device=hidden.device).triu(1)[None, None]
        out, _ = attn(hidden_states=hidden, position_embeddings=cos_sin, attention_mask=mask, cache=cache)
        if cache is not None:
            append_key_validity(cache, self.layer_idx, key_valid, batch, width)
        return out

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache=None,
        use_cache: bool | None = False,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        mod_context: ModForwardContext | None = None,
        **kwargs,
    ) -> torch.Tensor:
        if mod_context is None:
            raise ValueError(f"MoD layer {self.layer_idx} needs a ModForwardContext (run it through a gamma-mod "
                             "model: GammaLlamaModel or a MoD family model from gamma_mod.families)")
        if cache is None:
            cache = kwargs.get("past_key_values")
        ctx = mod_context
        normed = self.input_layernorm(hidden_states)
        logits, score, selection = self.route(hidden_states, normed, ctx)
        routable = ctx.routable
        idx = selection.index  # None: every token goes through, the layer runs on the sequence itself
        if idx is not None and idx.shape[1] == 0:
            # Every token of this step skips the layer (threshold decode): nothing to attend, nothing cached.
            scale = self.strategy.skipped_scale(logits, routable)
            return hidden_states if scale is None else hidden_states * scale.unsqueeze(-1).to(hidden_states.dtype)
        h = selection.take(hidden_states)  # (B, K, C)
        if self.mod.official:
            cos_sin = self.official_position_embeddings(h, selection, ctx, cache)
        else:
            # RoPE tables at the kept tokens' ORIGINAL positions (never renumbered); (1, T, D) tables serve every row.
            cos, sin = position_embeddings
            cos_sin = (selection.take(cos), selection.take(sin))
        h = h + self.attend_selected(selection.take(normed), cos_sin, selection, ctx, cache)
        mlp_out = self.mlp(self.post_attention_layernorm(h))
        weight = None
        if logits is not None:
            kept_score = selection.take(score) if score is not None else None
            weight = self.strategy.kept_mlp_weight(selection.take(logits), selection.take(routable), kept_score)
        if weight is not None:
            mlp_out = mlp_out * weight.unsqueeze(-1).to(mlp_out.dtype)
        h = h + mlp_out
        if idx is None:
            return h if h.dtype == hidden_states.dtype else h.to(hidden_states.dtype)

        base = hidden_states
        skipped_scale = self.strategy.skipped_scale(logits, routable)
        if skipped_scale is not None:
            base = base * torch.where(selection.keep, torch.ones_like(skipped_scale), skipped_scale).unsqueeze(-1).to(base.dtype)
        return selection.put(base, h.to(base.dtype))


class MoDDecoderLayer(MoDLayerMixin, LlamaDecoderLayer):
    """The Llama MoD layer of our LLaVA fork (gamma_mod/model/llava_llama.py)."""


_MOD_CLASSES: dict[type, type] = {LlamaDecoderLayer: MoDDecoderLayer}


def mod_layer_class(dense_class: type) -> type:
    """`class MoD<Dense>(MoDLayerMixin, Dense)`, made once per dense class (Llama: MoDDecoderLayer).

    Registered in this module under its name so that pickling a model (torch.save) finds it."""
    if issubclass(dense_class, MoDLayerMixin):
        raise TypeError(f"{dense_class.__name__} is already a MoD layer")
    cls = _MOD_CLASSES.get(dense_class)
    if cls is None:
        name = f"MoD{dense_class.__name__}"
        cls = type(name, (MoDLayerMixin, dense_class), {"__module__": __name__, "__qualname__": name,
                                                        "__doc__": f"MoD version of {dense_class.__qualname__}."})
        _MOD_CLASSES[dense_class] = cls
        globals()[name] = cls
    return cls


def is_mod_layer(module: nn.Module) -> bool:
    return isinstance(module, MoDLayerMixin)
