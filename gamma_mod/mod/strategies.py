"""Routing strategies: how a MoD layer's router is built and how its decision enters the residual.

A strategy answers five questions and nothing else: what the router reads, which tokens are
routable, what score ranks tokens for top-k, what weight scales a kept token's MLP output, and what
happens to a skipped token. The MoD layer asks; it holds no per-strategy branches.
"""

from __future__ import annotations

import math

import torch

from .config import ModConfig
from .router import TokenRouter
from .routing import routable_token_mask


class RoutingStrategy:
    name = "base"
    zero_init_router = False

    def __init__(self, mod: ModConfig) -> None:
        self.mod = mod

    def build_router(self, hidden_size: int) -> TokenRouter:
        return TokenRouter(hidden_size, zero_init=self.zero_init_router)

    def router_input(self, residual: torch.Tensor, normed: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def routable_mask(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, image_token_id: int) -> torch.Tensor:
        """(B, T) tokens that may skip a layer; all others are always processed."""
        return routable_token_mask(input_ids, attention_mask, image_token_id)

    def selection_score(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, T, 2) -> (B, T) score used for top-k and thresholds."""
        return logits.softmax(dim=-1)[..., 1]

    def kept_mlp_weight(self, logits: torch.Tensor, routable: torch.Tensor) -> torch.Tensor | None:
        """(B, K) weight on the MLP output of kept tokens, or None for no scaling."""
        raise NotImplementedError

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

    def kept_mlp_weight(self, logits, routable):
        p = logits.softmax(dim=-1)[..., 1]
        if self.mod.router_weighting == "prob":
            return p
        if self.mod.router_weighting == "straight_through":
            # Value exactly 1 (the layer computes what the dense layer would), gradient of p.
            return p / p.detach()
        return None


class PModStrategy(RoutingStrategy):
    """p-MoD (arXiv 2412.04449): zero-init router on the raw hidden state, TanhNorm weights, STRing.

    Only vision tokens are routable. With w = alpha * tanh(r) + 1 and r the router's "keep" logit:
    kept vision tokens get attention output + w * MLP output, skipped vision tokens are scaled by w.
    A zero router gives w = 1 and, with nothing skipped, exactly the dense layer.
    """

    name = "pmod"
    zero_init_router = True

    def router_input(self, residual, normed):
        return residual

    def routable_mask(self, input_ids, attention_mask, image_token_id):
        routable = input_ids == image_token_id  # vision tokens only
        return routable & attention_mask.bool() if attention_mask is not None else routable

    def selection_score(self, logits):
        return logits[..., 1] - logits[..., 0]

    def tanh_norm(self, logits: torch.Tensor) -> torch.Tensor:
        return self.mod.pmod_alpha * torch.tanh(self.selection_score(logits)) + 1.0

    def kept_mlp_weight(self, logits, routable):
        w = self.tanh_norm(logits)
        return torch.where(routable, w, torch.ones_like(w))

    def skipped_scale(self, logits, routable):
        w = self.tanh_norm(logits)
        return torch.where(routable, w, torch.ones_like(w))

    def layer_skip_ratios(self, num_hidden_layers):
        return {i: 1.0 - r for i, r in prd_retention(num_hidden_layers, self.mod.prd_dense_above, self.mod.prd_floor).items()}


def prd_retention(num_hidden_layers: int, dense_above: float = 0.85, floor: float = 0.15) -> dict[int, float]:
    """p-MoD progressive ratio decay: retention r(l) = 0.5 + 0.5 cos(pi l / (L - 1)), floored.

    Returns {layer: retention} for the MoD layers only; layers with r > dense_above stay dense.
    """
    if num_hidden_layers < 2:
        raise ValueError("PRD needs at least 2 layers")
    out = {}
    for layer in range(num_hidden_layers):
        r = 0.5 + 0.5 * math.cos(math.pi * layer / (num_hidden_layers - 1))
        if r > dense_above:
            continue
        out[layer] = max(r, floor)
    return out


def build_strategy(mod: ModConfig) -> RoutingStrategy:
    strategies = {"gamma": GammaStrategy, "pmod": PModStrategy}
    return strategies[mod.strategy](mod)
