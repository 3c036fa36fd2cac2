"""Routing strategies: how a MoD layer's router is built and how its decision enters the residual.

A strategy answers six questions and nothing else: what the router reads, which tokens are
routable, which tokens top-k keeps (score and count), what weight scales a kept token's MLP output,
what happens to a skipped token, and whether a routing loss is added. The MoD layer asks; it holds
no per-strategy branches.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import ModConfig
from .router import PModRouter, TokenRouter
from .routing import media_token_mask, ranked_keep_mask, routable_token_mask, topk_keep_mask, topk_skip_counts, truncated_keep_count


class RoutingStrategy:
    name = "base"
    zero_init_router = False
    # Whether the MoD layer adds its routing cross-entropy (x router_aux_loss_coef) to the loss.
    has_routing_loss = True

    def __init__(self, mod: ModConfig) -> None:
        self.mod = mod

    def build_router(self, hidden_size: int) -> nn.Module:
        return TokenRouter(hidden_size, zero_init=self.zero_init_router)

    def router_input(self, residual: torch.Tensor, normed: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def routable_mask(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                      image_token_id: int | tuple[int, ...]) -> torch.Tensor:
        """(B, T) tokens that may skip a layer; all others are always processed. image_token_id: the
        media token id(s) (a family's image and video tokens)."""
        return routable_token_mask(input_ids, attention_mask, image_token_id)

    def selection_score(self, logits: torch.Tensor) -> torch.Tensor:
        """Router output ((B, T, 2) for gamma) -> (B, T) score for the thresholds and the default top-k."""
        return logits.softmax(dim=-1)[..., 1]

    def topk_keep(
        self, logits: torch.Tensor, routable: torch.Tensor, skip_ratio: float, attention_mask: torch.Tensor | None = None,
        *, n_routable: list[int] | None = None, score: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, T) tokens kept by top-k routing (training and top-k prefill); attention_mask (B, T): 1 = real token.

        n_routable (host counts per row) and score (`selection_score(logits)`, if already computed) only
        spare work; the result is the same without them."""
        score = self.selection_score(logits) if score is None else score
        return topk_keep_mask(score, routable, skip_ratio, n_routable)

    def topk_kept_counts(self, n_routable: list[int], seq: int, skip_ratio: float) -> list[int] | None:
        """Tokens `topk_keep` keeps per row, from the routable counts alone (no device sync), or None
        when the count depends on the scores."""
        return [seq - n for n in topk_skip_counts(n_routable, skip_ratio)]

    def kept_mlp_weight(
        self, logits: torch.Tensor, routable: torch.Tensor, score: torch.Tensor | None = None
    ) -> torch.Tensor | None:
        """(B, K) weight on the MLP output of kept tokens, or None for no scaling; score: their
        `selection_score`, if already computed."""
        raise NotImplementedError

    def weights_need_router(self, any_routable: bool) -> bool:
        """Whether `kept_mlp_weight` can differ from 1 when every token is kept (else the router is not run)."""
        return True

    def skipped_scale(self, logits: torch.Tensor, routable: torch.Tensor) -> torch.Tensor | None:
        """(B, T) factor applied to skipped tokens, or None when they pass unchanged."""
        return None

    def layer_skip_ratios(self, num_hidden_layers: int) -> dict[int, float]:
        """Per-layer skip ratios that override capacity_factor; empty: capacity_factor everywhere."""
        return {}


class GammaStrategy(RoutingStrategy):
    """gamma-MoD: router on the pre-attention RMSNorm output; kept tokens' MLP output x p."""

    name = "gamma"

    def router_input(self, residual, normed):
        return normed

    def kept_mlp_weight(self, logits, routable, score=None):
        if self.mod.router_weighting == "none":
            return None
        p = self.selection_score(logits) if score is None else score
        if self.mod.router_weighting == "prob":
            return p
        if self.mod.router_weighting == "straight_through":
            # Value exactly 1 (the layer computes what the dense layer would), gradient of p.
            return p / p.detach()
        return None

    def weights_need_router(self, any_routable):
        return self.mod.router_weighting != "none"


class PModStrategy(RoutingStrategy):
    """p-MoD (arXiv 2412.04449), as MCG-NJU/p-MoD llava/model/language_model/pmod_llava_llama.py (`ModLayer`).

    Per MoD layer, with the layer's own zero-initialised `Linear(hidden, 1, bias=True)` router on the raw
    (un-normalised) hidden state, logit r, and only vision tokens as targets:
        w     = 0.2 * tanh(r) + 1                    TanhNorm; non-targets get r = -inf, i.e. w = 0.8
        k     = trunc(n_vision * retention)          per row, in fp32; retention from PRD
        kept  = the k largest w over the whole row   ties: lower position first
                (non-targets tie with targets saturated at w = 0.8 and, if ranked, take a slot)
        kept target:     h + attn + w * mlp          STRing
        skipped target:  w * h
        non-target:      h + attn + mlp              (always kept)
    No routing loss: the router learns only through w. A zero router gives w = 1 and, with nothing
    skipped, exactly the dense layer.

    Deliberate deviations from the official code:
      * padding tokens stay in the layer as masked keys (official drops them): identical outputs on
        real tokens; batches of any size at inference (official: batch 1).
      * layer 0 always stays dense, even where the schedule would route it (average ratio <= 0.35).
      * PRD divides by num_hidden_layers - 1 (official: 31, its 32-layer models); `prd_divisor: 31`
        reproduces the official table at any depth.
      * ties: the official `torch.topk` on CUDA keeps equal values at the k-th value in index order,
        which we reproduce; in a batch whose rows keep different counts, the official result for the
        shorter rows also depends on how CUDA sorts equal values, which we take to be index order too.
      * the threshold prefill/decode modes are ours (p-MoD decodes densely): they compare the raw
        logit r with the thresholds.
    """

    name = "pmod"
    has_routing_loss = False

    def build_router(self, hidden_size: int) -> PModRouter:
        return PModRouter(hidden_size)

    def router_input(self, residual, normed):
        return residual

    def routable_mask(self, input_ids, attention_mask, image_token_id):
        routable = media_token_mask(input_ids, image_token_id)  # vision tokens only (official mod_target_token_type "vision_all")
        return routable & attention_mask.bool() if attention_mask is not None else routable

    def selection_score(self, logits):
        return logits

    def tanh_norm(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, T) router logits -> TanhNorm weights in the logits' dtype, same operation order as official."""
        return torch.tanh(logits) * self.mod.pmod_alpha + 1.0

    def ranking_score(self, logits: torch.Tensor, routable: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """The official top-k input: TanhNorm of the logits with non-targets' logits set to -inf (w = 0.8, so
        they compete). Padding ranks below everything, as if absent: the official drops it from the layer."""
        score = self.tanh_norm(logits.masked_fill(~routable, float("-inf")))
        if attention_mask is not None:
            score = score.masked_fill(~attention_mask.bool(), float("-inf"))
        return score

    def keep_count(self, n_routable: torch.Tensor, skip_ratio: float) -> torch.Tensor:
        return truncated_keep_count(n_routable, 1.0 - skip_ratio)

    def topk_keep(self, logits, routable, skip_ratio, attention_mask=None, *, n_routable=None, score=None):
        n_keep = self.keep_count(routable.sum(dim=1), skip_ratio)
        return ranked_keep_mask(self.ranking_score(logits, routable, attention_mask), routable, n_keep)

    def topk_kept_counts(self, n_routable, seq, skip_ratio):
        return None  # non-targets compete for the top-k slots: the count depends on the scores

    def kept_mlp_weight(self, logits, routable, score=None):
        w = self.tanh_norm(logits)
        return torch.where(routable, w, torch.ones_like(w))

    def weights_need_router(self, any_routable):
        return any_routable  # non-targets get weight 1

    def skipped_scale(self, logits, routable):
        w = self.tanh_norm(logits)
        return torch.where(routable, w, torch.ones_like(w))

    def layer_skip_ratios(self, num_hidden_layers):
        return {i: 1.0 - r for i, r in prd_retention_for(self.mod, num_hidden_layers).items()}


def prd_retention(
    num_hidden_layers: int,
    dense_above: float = 0.85,
    floor: float = 0.15,
    average_ratio: float = 0.5,
    schedule: str = "shiftedcos",
    divisor: int | None = None,
) -> dict[int, float]:
    """p-MoD progressive ratio decay: {layer: retention} for the layers it makes MoD.

    shiftedcos:    r(l) = cos(l * pi / D) / 2 + average_ratio
    shiftedlinear: r(l) = (-l / D + 0.5) + average_ratio
    with D = divisor or num_hidden_layers - 1, written in the official operation order so that the
    values are bit-identical. Layers with r > dense_above stay dense; the others keep max(r, floor).
    """
    if num_hidden_layers < 2:
        raise ValueError("PRD needs at least 2 layers")
    d = divisor if divisor is not None else num_hidden_layers - 1
    if schedule == "shiftedcos":
        def decay(layer: int) -> float:
            return math.cos(layer * math.pi / d) / 2 + average_ratio
    elif schedule == "shiftedlinear":
        def decay(layer: int) -> float:
            return (-layer / d + 0.5) + average_ratio
    else:
        raise ValueError(f"unknown PRD schedule {schedule!r} (shiftedcos | shiftedlinear)")
    return {layer: max(decay(layer), floor) for layer in range(num_hidden_layers) if decay(layer) <= dense_above}


def prd_retention_for(mod: ModConfig, num_hidden_layers: int) -> dict[int, float]:
    """The PRD schedule a config's prd_* fields describe."""
    return prd_retention(num_hidden_layers, mod.prd_dense_above, mod.prd_floor, mod.prd_average_ratio,
                         mod.prd_schedule, mod.prd_divisor)


def build_strategy(mod: ModConfig) -> RoutingStrategy:
    strategies = {"gamma": GammaStrategy, "pmod": PModStrategy}
    return strategies[mod.strategy](mod)
