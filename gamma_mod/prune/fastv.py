"""FastV (arXiv 2403.06764): after layer K, drop the R share of image tokens that receive the least attention.

Reproduces pkunlp-icler/FastV, `src/FastV/llava-hf/transformers/src/transformers/models/llama/
modeling_llama.py` (`LlamaModel.fastv_forward`, the KV-cache version behind `demo-hf.py`): layers
0 .. K-1 see every token; the attention of layer K-1 (0-based), averaged over heads, from the last
prompt token to the image tokens ranks them; the round(N * (1 - R)) best stay (N image tokens of
the row), sorted back into their original order, at their ORIGINAL positions, for layers K .. L-1;
decode steps prune nothing and attend over the pruned cache. K=2, R=0.5 is the paper's default.

Deliberate deviations:
- Image tokens are found from the batch (`image_token_index`), per row; the official code takes a
  fixed `image_token_start_index` / `image_token_length` and ranks with batch row 0 for every row.
- The ranking attention is recomputed from layer K-1's own q_proj/k_proj/RoPE for the ranking
  queries only (gamma_mod/prune/ranking.py) instead of asking that layer for its full eager
  attention map (`output_attentions`, which forces eager attention); SDPA stays on.
- Probabilities stay fp32 through the head mean (official: cast back to fp16 first), and ties go to
  the earlier token (torch.topk leaves their order unspecified).
- `query` can also be "instruction" or "text" (gamma_mod/prune/base.py); the official ranks with
  the last token only. The official no-cache "inplace" variant (src/transformers/.../modeling_llama.py)
  ranks again at every generated token with that token as query; we always rank with the prompt, so
  cached and uncached generation agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import PrunerConfigError, Stage, TokenPruner, check_query


@dataclass(frozen=True)
class FastVConfig:
    k: int = 2  # layers that see every token; layer k-1 (0-based) ranks
    r: float = 0.5  # fraction of the image tokens dropped
    query: str = "last"

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise PrunerConfigError(f"fastv: K must be an integer >= 1 (layers before the drop), got {self.k!r}")
        if not 0.0 <= float(self.r) <= 1.0:
            raise PrunerConfigError(f"fastv: R (fraction of image tokens dropped) must be in [0, 1], got {self.r!r}")
        object.__setattr__(self, "r", float(self.r))
        check_query("fastv", self.query)


class FastVPruner(TokenPruner):
    name = "fastv"
    Config = FastVConfig

    def stages(self) -> list[Stage]:
        return [Stage(layer=self.config.k, rank_layer=self.config.k - 1)]

    def keep_counts(self, n_image: torch.Tensor, stage: int) -> torch.Tensor:
        # Python's round() on the float product, as the official `round(length * (1 - r))` (ties to even).
        kept = [round(n * (1 - float(self.config.r))) for n in n_image.tolist()]
        return torch.tensor(kept, dtype=torch.long, device=n_image.device)

    def describe(self) -> str:
        query = "" if self.config.query == "last" else f" query={self.config.query}"
        return f"FastV K={self.config.k} R={self.config.r:g}{query}"
