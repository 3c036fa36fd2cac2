"""What an inference-time token pruner tells the decoder loop.

A pruner is a list of stages. Stage s drops image tokens before decoder layer `stage.layer`, so
layers 0 .. layer-1 see every token ("after layer K" in the papers' 1-based words). It ranks the
image tokens still present by the attention the ranking queries give them in layer
`stage.rank_layer` (that layer's own q/k on its input, gamma_mod/prune/ranking.py) and keeps
`keep_counts(n_image, s)` of them per row, counted from the row's ORIGINAL number of image tokens.
Dropped tokens leave every later layer and that layer's KV cache; the kept ones keep their
original RoPE positions (gamma_mod/prune/session.py applies all of this inside the decoder loop).
A MoD layer can rank too: its q/k are applied to every present token, although its own attention
then runs over the tokens its router keeps.

Ranking queries (`query`):
  last         the prompt's last token (FastV; PDrop at inference, where it is the last
               instruction token). Generated tokens never rank, so a cached decode and an uncached
               recomputation drop the same tokens.
  instruction  PDrop's training rule: the token before each answer span (labels needed; without
               labels, the prompt's last token)
  text         the mean over every non-image prompt token (tokens before the image give it no
               attention, so they only scale the mean)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..errors import ConfigError

QUERY_MODES = ("last", "instruction", "text")


class PrunerConfigError(ConfigError):
    """A bad pruner setting; the message names the option, the value and what is accepted."""


@dataclass(frozen=True)
class Stage:
    layer: int  # the first layer that no longer sees the dropped tokens
    rank_layer: int  # whose q/k rank the image tokens: layer - 1 (FastV) or layer (PDrop)


def check_query(method: str, query: str) -> None:
    if query not in QUERY_MODES:
        raise PrunerConfigError(f"{method}: query must be one of {QUERY_MODES}, got {query!r}")


class TokenPruner:
    """Base class: a typed `Config` dataclass, the stages, the kept counts; no state between forwards."""

    name: ClassVar[str]
    Config: ClassVar[type]

    def __init__(self, config) -> None:
        self.config = config

    @property
    def query(self) -> str:
        return self.config.query

    def stages(self) -> list[Stage]:
        raise NotImplementedError

    def keep_counts(self, n_image: torch.Tensor, stage: int) -> torch.Tensor:
        """(B,) original image-token counts -> (B,) image tokens kept after stage `stage`."""
        raise NotImplementedError

    def describe(self) -> str:
        """A short label for tables ("FastV K=2 R=0.5")."""
        raise NotImplementedError

    def validate(self, num_layers: int) -> None:
        """Every stage inside a `num_layers`-layer decoder, stages in order, each ranked after the previous drop."""
        stages = self.stages()
        previous = 0
        for s, stage in enumerate(stages):
            if not 1 <= stage.layer < num_layers:
                raise PrunerConfigError(f"{self.describe()}: drops before layer {stage.layer}, outside 1..{num_layers - 1} "
                                        f"of this {num_layers}-layer decoder")
            if stage.layer <= previous and s > 0:
                raise PrunerConfigError(f"{self.describe()}: stage layers must increase, got {[x.layer for x in stages]}")
            if not (stage.layer - 1 <= stage.rank_layer <= stage.layer and stage.rank_layer >= previous):
                raise PrunerConfigError(f"{self.describe()}: stage {s} ranks at layer {stage.rank_layer}, which must be "
                                        f"layer {stage.layer} or the one before, after the previous drop")
            previous = stage.layer

    def to_dict(self) -> dict[str, Any]:
        """The config.json form: {"method": name, **fields}."""
        data = dataclasses.asdict(self.config)
        return {"method": self.name, **{k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config})"
