"""Token selection for MoD layers: which tokens go through a layer, as gather indices.

Everything here is pure tensor code with no model state, so it is tested on hand-made inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def routable_token_mask(
    input_ids: torch.Tensor, attention_mask: torch.Tensor | None, image_token_id: int
) -> torch.Tensor:
    """Tokens a MoD layer may skip: the system prompt and the image tokens.

    Computed from the batch: every real token up to and including the sample's last image token
    (with `<image>` at the start of the human turn that is exactly system prompt + image). The
    question, the answer and padding come later and are never routable ("masked routing learning").
    Samples without an image have no routable token. (B, T) bool.
    """
    is_image = input_ids == image_token_id
    positions = torch.arange(input_ids.shape[1], device=input_ids.device)
    # Last image position per row; -1 where a row has no image.
    last_image = torch.where(is_image, positions, torch.full_like(positions, -1)).amax(dim=1, keepdim=True)
    routable = positions.unsqueeze(0) <= last_image
    if attention_mask is not None:
        routable &= attention_mask.bool()
    return routable


@dataclass
class TokenSelection:
    """The tokens one MoD layer processes, per row, in ORIGINAL order.

    index: (B, K) positions into the sequence, ascending where valid; K = max kept count in the batch.
    valid: (B, K) False for filler slots of rows that keep fewer than K tokens.
    keep:  (B, T) bool, True where the token goes through the layer.
    """

    index: torch.Tensor
    valid: torch.Tensor
    keep: torch.Tensor


def topk_keep_mask(scores: torch.Tensor, routable: torch.Tensor, skip_ratio: float) -> torch.Tensor:
    """Keep every non-routable token and the top (1 - skip_ratio) of each row's routable tokens.

    The number skipped in a row is int(skip_ratio * n_routable), so with ratio 0 nothing is skipped.
    scores: (B, T) float, routable: (B, T) bool -> (B, T) bool.
    """
    n_routable = routable.sum(dim=1)  # (B,)
    n_skip = torch.floor(n_routable.to(torch.float64) * skip_ratio).long()
    n_keep = n_routable - n_skip
    # Rank routable tokens by score, descending; non-routable ones sort last and are kept separately.
    masked = scores.masked_fill(~routable, float("-inf"))
    order = masked.argsort(dim=1, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    keep_routable = routable & (rank < n_keep.unsqueeze(1))
    return keep_routable | ~routable


def truncated_keep_count(n_routable: torch.Tensor, retention: float) -> torch.Tensor:
    """p-MoD's kept count per row: trunc(n * retention), computed in fp32 like the official
    `torch.trunc(mod_target_lengths * ratio)` (an int32 tensor times a Python float is fp32).

    n_routable: (B,) int -> (B,) long.
    """
    product = n_routable.to(torch.float32) * torch.tensor(retention, dtype=torch.float32, device=n_routable.device)
    return torch.trunc(product).long()


def ranked_keep_mask(scores: torch.Tensor, routable: torch.Tensor, n_keep: torch.Tensor) -> torch.Tensor:
    """Keep every non-routable token and each row's routable tokens among the row's `n_keep` best.

    Unlike `topk_keep_mask`, ranking runs over the WHOLE row as scored: a non-routable token with a
    high enough score takes a top-k slot (and is kept anyway), so fewer routable tokens are kept.
    Strategies that do not want that give non-routable tokens -inf. Ties go to the lower position,
    which is how CUDA `torch.topk` fills the slots left at the k-th value (in index order).
    scores: (B, T) float, routable: (B, T) bool, n_keep: (B,) long -> (B, T) bool.
    """
    order = scores.argsort(dim=1, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    return (routable & (rank < n_keep.unsqueeze(1))) | ~routable


def threshold_keep_mask(scores: torch.Tensor, routable: torch.Tensor, threshold: float) -> torch.Tensor:
    """Official inference rule: a routable token is kept when its score exceeds `threshold`."""
    return ~routable | (scores > threshold)


def selection_from_keep_mask(keep: torch.Tensor) -> TokenSelection:
    """Turn a (B, T) keep mask into gather indices in original order, padded to the longest row."""
    batch, seq = keep.shape
    counts = keep.sum(dim=1)
    width = int(counts.max().item()) if batch else 0
    positions = torch.arange(seq, device=keep.device).expand(batch, seq)
    # Kept positions first (in order), then the rest: sort by (not kept, position).
    sort_key = (~keep).long() * seq + positions
    index = sort_key.argsort(dim=1)[:, :width]
    valid = torch.arange(width, device=keep.device).unsqueeze(0) < counts.unsqueeze(1)
    return TokenSelection(index=index, valid=valid, keep=keep)


def gather_tokens(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x: (B, T, ...) -> (B, K, ...) at `index` (B, K)."""
    expand = index.view(*index.shape, *([1] * (x.dim() - 2))).expand(*index.shape, *x.shape[2:])
    return x.gather(1, expand)


def scatter_tokens(base: torch.Tensor, index: torch.Tensor, values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Write `values` (B, K, C) into a copy of `base` (B, T, C) at `index`; filler slots keep `base`."""
    current = gather_tokens(base, index)
    values = torch.where(valid.unsqueeze(-1), values, current)
    expand = index.unsqueeze(-1).expand_as(values)
    return base.scatter(1, expand, values)
