"""MoDDecoderLayer: a Llama decoder layer that only processes the tokens its router keeps.

Subclasses transformers' `LlamaDecoderLayer` (same parameters, same state-dict names, plus
`router.weight`), so a dense layer converts by loading its state dict. Per forward:

    scores  = router(input_layernorm(h))                 (B, T, 2)  [strategy decides the input]
    keep    = top-k over routable tokens (+ all others)   (B, T)
    h_k     = gather(h, keep)                             (B, K, C)  original order, original RoPE positions
    h_k     = h_k + attn(norm(h_k))                       causal among kept tokens, padding respected
    h_k     = h_k + w * mlp(norm(h_k))                    w from the strategy (gamma: router prob p, MLP branch)
    h       = scatter(h, keep, h_k)                       skipped tokens pass unchanged (p-MoD: x w)

With `mod.compat: official` the keep rule, the kept tokens' positions (renumbered 0..k-1) and the
routing-loss scope are the released code's (gamma_mod/mod/compat.py); the rest is shared.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers.models.llama.modeling_llama import (
    LlamaDecoderLayer,
    apply_rotary_pos_emb,
    eager_attention_forward,
)
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from .cache import append_key_validity, cached_key_validity
from .compat import (
    official_decode_tokens,
    official_inference_keep,
    official_positions,
    official_train_keep,
)
from .config import ModConfig
from .routing import (
    TokenSelection,
    gather_tokens,
    scatter_tokens,
    selection_from_keep_mask,
    threshold_keep_mask,
)
from .strategies import RoutingStrategy


@dataclass
class LayerRoutingStats:
    routable: int
    skipped: int
    # Routing loss of this layer (mean CE over routable tokens); None when nothing is routable.
    loss: torch.Tensor | None = None
    # (B, T) which tokens went through the layer (for skip maps and speed reports).
    keep: torch.Tensor | None = None


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
    """

    routable: torch.Tensor
    decode: torch.Tensor | None = None
    attention_mask: torch.Tensor | None = None
    stats: dict[int, LayerRoutingStats] = field(default_factory=dict)
    rotary: Callable | None = None
    position_ids: torch.Tensor | None = None
    labels: torch.Tensor | None = None

    def routing_loss(self) -> torch.Tensor | None:
        losses = [s.loss for s in self.stats.values() if s.loss is not None]
        return torch.stack(losses).sum() if losses else None


class MoDDecoderLayer(LlamaDecoderLayer):
    def __init__(self, config, layer_idx: int, mod: ModConfig, strategy: RoutingStrategy, router: nn.Module) -> None:
        super().__init__(config, layer_idx)
        self.layer_idx = layer_idx
        self.mod = mod
        self.strategy = strategy
        # With a shared router every MoD layer holds the same module: one parameter, and the state
        # dict still names it `model.layers.{i}.router.weight` per layer like the released checkpoints.
        self.router = router

    # -- routing -----------------------------------------------------------------------------
    def select_tokens(self, logits: torch.Tensor, ctx: ModForwardContext) -> TokenSelection:
        score = self.strategy.selection_score(logits)
        routable = ctx.routable
        ratio = self.mod.skip_ratio(self.layer_idx)
        if self.mod.prefill == "threshold" and not self.training:
            keep = threshold_keep_mask(score, routable, self.mod.prefill_threshold)
        else:
            keep = self.strategy.topk_keep(logits, routable, ratio, ctx.attention_mask)
        if ctx.decode is not None and self.mod.decode == "threshold" and not self.mod.keeps_all_tokens:
            # Official decode rule: a generated token skips the layer when its score is below 0.5.
            keep = keep & ~(ctx.decode & (score < self.mod.decode_threshold))
        if self.mod.keeps_all_tokens:
            keep = torch.ones_like(keep)
        return selection_from_keep_mask(keep)

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
        past_valid = cached_key_validity(cache, self.layer_idx) if cache is not None else None
        past_kept = past_valid.sum(dim=1) if past_valid is not None else None
        original_at = None
        if self.mod.official_layout == "mgm" and not self.training:
            original_at = official_decode_tokens(ctx.decode, tuple(keep_real.shape), keep_real.device)
        positions = official_positions(keep_real, past_kept, ctx.position_ids, original_at)
        return ctx.rotary(hidden, gather_tokens(positions, selection.index))

    def routing_loss(self, logits: torch.Tensor, keep: torch.Tensor, routable: torch.Tensor) -> torch.Tensor | None:
        """2-way cross-entropy of the router against this layer's own keep decision, routable tokens only."""
        if not routable.any():
            return None
        target = keep[routable].long()
        return nn.functional.cross_entropy(logits[routable], target)

    # -- attention over the kept tokens ------------------------------------------------------
    def attention_mask_for_selection(
        self, selection: TokenSelection, ctx: ModForwardContext, past_valid: torch.Tensor | None, dtype
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Additive mask (B, 1, K, S_past + K), or None for plain causal, and the validity (B, K) of the new keys."""
        key_valid = selection.valid
        if ctx.attention_mask is not None:
            key_valid = key_valid & gather_tokens(ctx.attention_mask.bool(), selection.index)
        if past_valid is None and bool(key_valid.all()):
            # Plain causal attention over the kept tokens: SDPA's causal kernel, no mask tensor.
            return None, key_valid
        width = selection.index.shape[1]
        causal = torch.ones(width, width, dtype=torch.bool, device=key_valid.device).tril()
        allowed = causal.unsqueeze(0) & key_valid.unsqueeze(1)  # (B, K, K)
        if past_valid is not None:
            allowed = torch.cat([past_valid.unsqueeze(1).expand(-1, width, -1), allowed], dim=2)
        # Every query may see itself, so padding/filler rows stay finite (their output is discarded).
        diag = torch.zeros_like(allowed)
        diag[..., -width:] = torch.eye(width, dtype=torch.bool, device=allowed.device)
        allowed = allowed | diag
        mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
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
        attn = self.self_attn
        batch, width, _ = hidden.shape
        shape = (batch, width, -1, attn.head_dim)
        q = attn.q_proj(hidden).view(shape).transpose(1, 2)  # (B, H, K, D)
        k = attn.k_proj(hidden).view(shape).transpose(1, 2)
        v = attn.v_proj(hidden).view(shape).transpose(1, 2)
        cos, sin = cos_sin
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        past_valid = cached_key_validity(cache, self.layer_idx) if cache is not None else None
        mask, key_valid = self.attention_mask_for_selection(selection, ctx, past_valid, q.dtype)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)
            append_key_validity(cache, self.layer_idx, key_valid)
        interface: Callable = eager_attention_forward
        if mask is None and attn.config._attn_implementation == "eager":
            mask = torch.full((width, width), torch.finfo(q.dtype).min, dtype=q.dtype, device=q.device).triu(1)
        if attn.config._attn_implementation != "eager":
            # flash-attention takes no arbitrary masks; MoD layers use SDPA there (dense layers keep flash).
            interface = ALL_ATTENTION_FUNCTIONS["sdpa"]
        out, _ = interface(attn, q, k, v, mask, dropout=attn.attention_dropout if self.training else 0.0, scaling=attn.scaling)
        return attn.o_proj(out.reshape(batch, width, -1).contiguous())

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
            raise ValueError(f"MoD layer {self.layer_idx} needs a ModForwardContext (run it through GammaLlamaModel)")
        if cache is None:
            cache = kwargs.get("past_key_values")
        ctx = mod_context
        normed = self.input_layernorm(hidden_states)
        logits = self.router(self.strategy.router_input(hidden_states, normed))  # gamma (B, T, 2) fp32; pmod (B, T)
        routable = ctx.routable
        if self.mod.official:
            selection, competing = self.select_tokens_official(logits, ctx)
            # Official routing loss: every one of the B x T tokens, question and padding included.
            loss_scope = torch.ones_like(selection.keep)
        else:
            selection = self.select_tokens(logits, ctx)
            competing = loss_scope = routable
        with_loss = torch.is_grad_enabled() and self.strategy.has_routing_loss
        loss = self.routing_loss(logits, selection.keep, loss_scope) if with_loss else None
        ctx.stats[self.layer_idx] = LayerRoutingStats(
            routable=int(competing.sum()), skipped=int((competing & ~selection.keep).sum()), loss=loss,
            keep=selection.keep.detach(),
        )

        idx = selection.index
        if idx.shape[1] == 0:
            # Every token of this step skips the layer (threshold decode): nothing to attend, nothing cached.
            scale = self.strategy.skipped_scale(logits, routable)
            return hidden_states if scale is None else hidden_states * scale.unsqueeze(-1).to(hidden_states.dtype)
        h = gather_tokens(hidden_states, idx)  # (B, K, C)
        if self.mod.official:
            cos_sin = self.official_position_embeddings(h, selection, ctx, cache)
        else:
            cos, sin = position_embeddings
            if cos.shape[0] != hidden_states.shape[0]:
                cos, sin = cos.expand(hidden_states.shape[0], -1, -1), sin.expand(hidden_states.shape[0], -1, -1)
            # Gather RoPE tables at the kept tokens' ORIGINAL positions (never renumbered).
            cos_sin = (gather_tokens(cos, idx), gather_tokens(sin, idx))
        h = h + self.attend_selected(gather_tokens(normed, idx), cos_sin, selection, ctx, cache)
        mlp_out = self.mlp(self.post_attention_layernorm(h))
        weight = self.strategy.kept_mlp_weight(gather_tokens(logits, idx), gather_tokens(routable, idx))
        if weight is not None:
            mlp_out = mlp_out * weight.unsqueeze(-1).to(mlp_out.dtype)
        h = h + mlp_out

        base = hidden_states
        skipped_scale = self.strategy.skipped_scale(logits, routable)
        if skipped_scale is not None:
            base = base * torch.where(selection.keep, torch.ones_like(skipped_scale), skipped_scale).unsqueeze(-1).to(base.dtype)
        return scatter_tokens(base, idx, h.to(base.dtype), selection.valid)
