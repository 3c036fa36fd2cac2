"""The vision-to-language projector (`mm_projector`), LLaVA's naming and layouts."""

from __future__ import annotations

from torch import nn


def build_projector(projector_type: str, vision_hidden: int, text_hidden: int) -> nn.Module:
    """`linear`: one Linear. `mlp2x_gelu`: Linear-GELU-Linear, keys `mm_projector.{0,2}.*` as in LLaVA-1.5."""
    if projector_type == "linear":
        return nn.Linear(vision_hidden, text_hidden)
    if projector_type == "mlp2x_gelu":
        return nn.Sequential(nn.Linear(vision_hidden, text_hidden), nn.GELU(), nn.Linear(text_hidden, text_hidden))
    raise ValueError(f"unknown mm_projector_type {projector_type!r}")
