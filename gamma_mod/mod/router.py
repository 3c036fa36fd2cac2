"""MoD routers: score each token for "go through this layer" vs "skip it".

    TokenRouter  gamma-MoD  Linear(hidden, 2, bias=False), logits (B, T, 2) in fp32   state dict: router.weight
    PModRouter   p-MoD      Linear(hidden, 1, bias=True), logit (B, T) in the input's dtype
                            state dict: router.router.weight (1, C), router.router.bias (1,)

The p-MoD names and parameterisation are those of MCG-NJU/p-MoD
(llava/model/language_model/pmod_llava_llama.py: `ModLayer.router = TokenRouter(config)` holding
`self.router = nn.Linear(hidden_size, 1, bias=mod_bias_enabled)`, zero-initialised with
`mod_special_init`; the released recipe enables both), so its router tensors load and save unchanged.
"""

from __future__ import annotations

import contextlib
import re
import warnings

import torch
from torch import nn


class TokenRouter(nn.Module):
    """`Linear(hidden, 2, bias=False)`; score = softmax(logits)[..., 1] (the official gamma-MoD design).

    With `zero_init` both logits start at 0, so the router starts neutral.
    """

    def __init__(self, hidden_size: int, zero_init: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(2, hidden_size))
        self.zero_init = zero_init
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.zero_init:
            nn.init.zeros_(self.weight)
        else:
            nn.init.normal_(self.weight, std=0.02)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """(B, T, C) -> router logits (B, T, 2), computed in fp32 for a stable softmax/top-k."""
        return nn.functional.linear(hidden_states.float(), self.weight.float())


class ZeroInitLinear(nn.Linear):
    """A Linear whose weight and bias start at exactly 0 (p-MoD `mod_special_init`).

    Its own class so that the model's weight initialisation can tell it from the other Linears.
    """

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)


class PModRouter(nn.Module):
    """p-MoD router: one logit per token, `Linear(hidden, 1, bias=True)`, zero-initialised.

    Computed in the input's dtype like the official `nn.Linear` (bf16 training gives bf16 logits and
    TanhNorm weights, with the ties that brings; see PModStrategy).
    """

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.router = ZeroInitLinear(hidden_size, 1, bias=True)  # named as in the official state dict

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """(B, T, C) -> router logit (B, T)."""
        return self.router(hidden_states.to(self.router.weight.dtype)).squeeze(-1)


_ROUTER_KEY = re.compile(r"^(.*\.layers)\.(\d+)\.router\.(.+)$")


def load_shared_router(router: nn.Module, router_weights: dict[str, torch.Tensor]) -> None:
    """Load a shared router from a checkpoint's per-layer copies (`...layers.{i}.router.*`, as the released
    checkpoints store it): the lowest MoD layer's copy wins; copies that differ from it are warned about."""
    copies: dict[int, dict[str, torch.Tensor]] = {}  # layer -> {parameter name inside the router: tensor}
    for key, value in router_weights.items():
        match = _ROUTER_KEY.match(key)
        if match is not None:
            copies.setdefault(int(match.group(2)), {})[match.group(3)] = value
    if not copies:
        return
    layers = sorted(copies)
    first = copies[layers[0]]
    differing = [i for i in layers[1:] if copies[i].keys() != first.keys()
                 or any(not torch.equal(copies[i][name], first[name]) for name in first)]
    if differing:
        warnings.warn(f"the checkpoint's shared-router copies differ ({len(differing)} of {len(layers)} differ from "
                      f"layer {layers[0]}'s); using layer {layers[0]}'s for every MoD layer", stacklevel=3)
    for name, param in router.named_parameters():
        if name in first:
            with gathered_for_write(param), torch.no_grad():
                param.copy_(first[name].to(param.dtype))


def gathered_for_write(param: torch.nn.Parameter):
    """Under DeepSpeed ZeRO-3 a parameter is partitioned (shape 0) until gathered; write on rank 0."""
    if hasattr(param, "ds_id"):
        import deepspeed

        return deepspeed.zero.GatheredParameters([param], modifier_rank=0)
    return contextlib.nullcontext()
