"""The MoD router: scores each token for "go through this layer" vs "skip it"."""

from __future__ import annotations

import torch
from torch import nn


class TokenRouter(nn.Module):
    """`Linear(hidden, 2, bias=False)`; score = softmax(logits)[..., 1] (the official gamma-MoD design).

    With `zero_init` (p-MoD) both logits start at 0, so the router starts neutral.
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
