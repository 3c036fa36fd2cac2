"""PyramidDrop (arXiv 2410.17247): drop image tokens in stages, ranked by the last instruction token.

Reproduces Cooperx521/PyramidDrop, `llava/model/modeling_llama_pdrop.py` (`pdrop_forward`,
`pdrop_rank_drop`) as run by `llava/eval/model_vqa_loader.py --layer_list '[8,16,24]'
--image_token_ratio_list "[0.5,0.25,0.125]"`: after layer l of `layers` (1-based: the first l
layers see the tokens of the previous stage), layer l's OWN input_layernorm, q_proj, k_proj and
RoPE, applied to the current tokens, give the attention of the ranking query (at inference the
prompt's last token, i.e. the last instruction token; in training the token before each answer
span) over the current sequence; softmax, mean over heads, image columns, mean over queries; the
int(N * ratio_s) best of the row's N ORIGINAL image tokens stay, in their original order. With
`lam` the ratios are lam, lam^2, lam^3, ... (the paper's lambda: the share KEPT per stage; lam=1
keeps everything, lam=0.5 at 8/16/24 is the paper's setting). Decode steps drop nothing.

Deliberate deviations:
- Kept tokens keep their ORIGINAL RoPE positions; the official re-numbers them 0..n-1 after every
  stage (and shifts decode positions by the dropped count).
- Image tokens are found per row from `image_token_index`, left or right padding; the official
  needs right padding and one image span per row (`image_token_posi`).
- Probabilities stay fp32 through the means (official: cast back to the model dtype); ties go to
  the earlier token.
- The ranking layer's q/k are computed for the ranking queries and all keys only, never a full
  attention map; SDPA stays on for every layer.
- In training the official also drops the dropped tokens' labels and re-pads the batch; we keep the
  output at full length (a dropped token's output is its hidden state at the drop; image tokens
  carry no label anyway).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import PrunerConfigError, Stage, TokenPruner, check_query


@dataclass(frozen=True)
class PDropConfig:
    layers: tuple[int, ...] = (8, 16, 24)  # 1-based "after layer l" = 0-based layer l is the first pruned one
    lam: float = 0.5  # share of the ORIGINAL image tokens kept grows as lam^(s+1)
    ratios: tuple[float, ...] | None = None  # explicit kept shares per stage (the official image_token_ratio_list)
    query: str = "last"

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(int(x) for x in self.layers))
        if self.ratios is not None:
            object.__setattr__(self, "ratios", tuple(float(x) for x in self.ratios))
        if not self.layers:
            raise PrunerConfigError("pdrop: layers must name at least one layer")
        if list(self.layers) != sorted(set(self.layers)) or self.layers[0] < 1:
            raise PrunerConfigError(f"pdrop: layers must be increasing integers >= 1, got {list(self.layers)}")
        if not 0.0 <= float(self.lam) <= 1.0:
            raise PrunerConfigError(f"pdrop: lambda (share of image tokens kept per stage) must be in [0, 1], "
                                    f"got {self.lam!r}")
        if self.ratios is not None:
            if len(self.ratios) != len(self.layers):
                raise PrunerConfigError(f"pdrop: {len(self.ratios)} ratios for {len(self.layers)} layers")
            if any(not 0.0 <= r <= 1.0 for r in self.ratios) or list(self.ratios) != sorted(self.ratios, reverse=True):
                raise PrunerConfigError(f"pdrop: ratios must be non-increasing shares in [0, 1], got {list(self.ratios)}")
        object.__setattr__(self, "lam", float(self.lam))
        check_query("pdrop", self.query)

    def kept_share(self, stage: int) -> float:
        return self.ratios[stage] if self.ratios is not None else float(self.lam) ** (stage + 1)


class PDropPruner(TokenPruner):
    name = "pdrop"
    Config = PDropConfig

    def stages(self) -> list[Stage]:
        return [Stage(layer=layer, rank_layer=layer) for layer in self.config.layers]

    def keep_counts(self, n_image: torch.Tensor, stage: int) -> torch.Tensor:
        share = self.config.kept_share(stage)
        # int() of the float product, as the official `int(cur_image_token * ratio)`.
        return torch.tensor([int(n * share) for n in n_image.tolist()], dtype=torch.long, device=n_image.device)

    def describe(self) -> str:
        layers = ",".join(map(str, self.config.layers))
        shares = (f"ratios={','.join(f'{r:g}' for r in self.config.ratios)}" if self.config.ratios is not None
                  else f"lambda={self.config.lam:g}")
        query = "" if self.config.query == "last" else f" query={self.config.query}"
        return f"PDrop layers={layers} {shares}{query}"
