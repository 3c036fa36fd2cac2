"""ARank: the rank of a layer's attention maps, the γ-MoD redundancy signal.

For one head the causal attention probability matrix A (T x T) is lower triangular with a
positive diagonal (softmax never gives exactly 0 to the token itself), hence always full rank T;
we zero the diagonal first so the rank counts the independent patterns a head uses to read
OTHER tokens. The result is between 0 and T - 1 (row 0 becomes all zero).

Reference values (derived by hand, pinned in tests/test_arank.py):
  - every token attends only to token 0 ("attention sink"): rank 1;
  - uniform causal attention (row i = 1/(i+1) over tokens 0..i): rank T - 1, NOT 1 — after the
    diagonal is removed, row i is a multiple of the indicator of 0..i-1, and prefix indicators of
    lengths 1..T-1 are linearly independent. A low ARank means many rows read the same few tokens.

Tolerance: `torch.linalg.matrix_rank` counts singular values above a threshold. `tol=None` keeps
torch's default, rtol = T * eps(fp32) * sigma_max (about 1.2e-7 * T * sigma_max): anything the
fp32 softmax can produce that is not numerical noise counts, which is what the γ-MoD code measures
(`matrix_rank` with defaults). `tol=x` is a RELATIVE tolerance: singular values <= x * sigma_max
count as zero; relative, so it reads the same for any sequence length's probability scale.
Larger values (1e-3 .. 1e-2) make ARank ignore faint attention and separate layers more.
"""

from __future__ import annotations

import torch


def attention_rank(probs: torch.Tensor, tol: float | None = None) -> torch.Tensor:
    """probs: (H, T, T) causal attention probabilities of one sample -> (H,) float ranks, diagonal zeroed.

    Computed in fp32 whatever the input dtype (bf16 would make every threshold meaningless).
    """
    if probs.dim() != 3 or probs.shape[-1] != probs.shape[-2]:
        raise ValueError(f"expected (heads, T, T) attention probabilities, got shape {tuple(probs.shape)}")
    if tol is not None and tol < 0:
        raise ValueError(f"tol must be >= 0, got {tol}")
    a = probs.float().clone()
    a.diagonal(dim1=-2, dim2=-1).zero_()
    if tol is None:
        return torch.linalg.matrix_rank(a).float()
    return torch.linalg.matrix_rank(a, rtol=tol).float()


def sample_arank(probs: torch.Tensor, tol: float | None = None) -> float:
    """ARank of one sample in one layer: the mean of its heads' ranks."""
    return float(attention_rank(probs, tol).mean())
