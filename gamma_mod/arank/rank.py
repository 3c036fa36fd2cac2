"""ARank: the rank of a layer's attention maps, the γ-MoD redundancy signal.

For one head the attention probability matrix A (T x T) is lower triangular with a non-zero
diagonal, hence always full rank; we zero the diagonal first so the rank says how many independent
attention patterns the head really uses. Rank is `torch.linalg.matrix_rank` in fp32: singular values
above `tol` count; `tol=None` is torch's default, max(T, T) * eps(fp32) * sigma_max.
"""

from __future__ import annotations

import torch


def head_ranks(probs: torch.Tensor, tol: float | None = None) -> torch.Tensor:
    """probs: (H, T, T) attention probabilities of one sample -> (H,) ranks after zeroing the diagonal."""
    a = probs.float().clone()
    a.diagonal(dim1=-2, dim2=-1).zero_()
    if tol is None:
        return torch.linalg.matrix_rank(a).float()
    return torch.linalg.matrix_rank(a, atol=tol, rtol=0.0).float()


def sample_arank(probs: torch.Tensor, tol: float | None = None) -> float:
    """ARank of one sample in one layer: the mean over heads."""
    return float(head_ranks(probs, tol).mean())
