"""Token selection for MoD layers: which tokens go through a layer, as gather indices.

Everything here is pure tensor code with no model state, so it is tested on hand-made inputs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch


def media_token_mask(input_ids: torch.Tensor, token_ids: int | Sequence[int]) -> torch.Tensor:
    """(B, T) True at tokens whose id is one of `token_ids` (one id, or several: image and video tokens)."""
    ids = (token_ids,) if isinstance(token_ids, int) else tuple(token_ids)
    if len(ids) == 1:
        return input_ids == ids[0]
    return torch.isin(input_ids, torch.tensor(ids, dtype=input_ids.dtype, device=input_ids.device))


def routable_token_mask(
    input_ids: torch.Tensor, attention_mask: torch.Tensor | None, image_token_id: int | Sequence[int]
) -> torch.Tensor:
    """Tokens a MoD layer may skip: the system prompt and the image (and video) tokens.

    Computed from the batch: every real token up to and including the sample's last media token
    (`image_token_id`: one id, or the family's image and video token ids; with `<image>` at the start
    of the human turn that is exactly system prompt + image). The question, the answer and padding
    come later and are never routable ("masked routing learning"). Rows may hold different numbers of
    media tokens. Samples without an image or video have no routable token. (B, T) bool.
    """
    is_image = media_token_mask(input_ids, image_token_id)
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
           None when every token is kept: the layer then runs on the sequence itself (no gather/scatter).
    valid: (B, K) False for filler slots of rows that keep fewer than K tokens; None when no slot is
           filler (every row keeps K tokens: the usual top-k case), so nothing needs masking.
    keep:  (B, T) bool, True where the token goes through the layer.
    counts: kept tokens per row, on the host, so callers never sync to learn them.
    """

    index: torch.Tensor | None
    valid: torch.Tensor | None
    keep: torch.Tensor
    counts: list[int]
    _flat: torch.Tensor | None = field(default=None, init=False, repr=False, compare=False)

    def flat_index(self) -> torch.Tensor:
        """`index` into the flattened (B*T) batch, computed once and shared by every gather and the scatter."""
        if self._flat is None:
            self._flat = flat_token_index(self.index, self.keep.shape[1])
        return self._flat

    def take(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T, ...) or (1, T, ...) shared by every row -> (B, K, ...) at the selected tokens
        (x itself when every token is kept)."""
        if self.index is None:
            return x
        if x.shape[0] == 1 and self.index.shape[0] > 1:
            return gather_tokens(x, self.index)
        return gather_flat(x, self.flat_index(), self.index.shape)

    def put(self, base: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """A copy of `base` (B, T, C) with the selected tokens replaced by `values` (B, K, C)."""
        if self.index is None:
            return values
        if self.valid is not None:
            values = torch.where(self.valid.unsqueeze(-1), values, self.take(base))
        return scatter_flat(base, self.flat_index(), values)


def topk_keep_mask(
    scores: torch.Tensor, routable: torch.Tensor, skip_ratio: float, n_routable: list[int] | None = None
) -> torch.Tensor:
    """Keep every non-routable token and the top (1 - skip_ratio) of each row's routable tokens.

    The number skipped in a row is int(skip_ratio * n_routable), so with ratio 0 nothing is skipped.
    Ties go to the lower position. scores: (B, T) float, routable: (B, T) bool -> (B, T) bool.
    `n_routable`: the rows' routable counts when the caller knows them (host ints); rows with equal
    counts then need no per-row count tensor, and rows routable end to end no masking.
    """
    if n_routable is not None and len(set(n_routable)) == 1:
        n_keep = n_routable[0] - topk_skip_counts(n_routable[:1], skip_ratio)[0]
        if n_routable[0] == scores.shape[1]:
            return _top(scores, n_keep)
        return _top(scores.masked_fill(~routable, float("-inf")), n_keep) | ~routable
    n = routable.sum(dim=1)  # (B,)
    n_skip = torch.floor(n.to(torch.float64) * skip_ratio).long()
    # Rank routable tokens by score, descending; non-routable ones sort last and are kept separately.
    masked = scores.masked_fill(~routable, float("-inf"))
    return _keep_best(masked, routable, n - n_skip)


def topk_skip_counts(n_routable: list[int], skip_ratio: float) -> list[int]:
    """Tokens `topk_keep_mask` skips per row, from host-side routable counts (the same float64 floor)."""
    return [math.floor(n * skip_ratio) for n in n_routable]


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
    return _keep_best(scores, routable, n_keep)


def _top(scores: torch.Tensor, n_keep: torch.Tensor | int) -> torch.Tensor:
    """(B, T) True at each row's n_keep best scores, ties to the lower position; n_keep (B,) or one int.

    One stable sort; "among the best" is written back through the sort's permutation (a scatter
    without duplicates, so deterministic) instead of materialising every token's rank.
    """
    order = scores.argsort(dim=1, descending=True, stable=True)
    if isinstance(n_keep, torch.Tensor):
        n_keep = n_keep.unsqueeze(1)
    in_top = torch.arange(order.shape[1], device=order.device).unsqueeze(0) < n_keep  # (B, T) in sorted order
    return torch.empty_like(order, dtype=torch.bool).scatter_(1, order, in_top.expand_as(order))


def _keep_best(scores: torch.Tensor, routable: torch.Tensor, n_keep: torch.Tensor) -> torch.Tensor:
    """~routable | (routable & among the row's n_keep best scores, ties to the lower position)."""
    return (routable & _top(scores, n_keep)) | ~routable


def threshold_keep_mask(scores: torch.Tensor, routable: torch.Tensor, threshold: float) -> torch.Tensor:
    """Official inference rule: a routable token is kept when its score exceeds `threshold`."""
    return ~routable | (scores > threshold)


def all_tokens_selection(batch: int, seq: int, device) -> TokenSelection:
    """Every token goes through the layer: the layer is its dense twin (plus the strategy's weights)."""
    keep = torch.ones(batch, seq, dtype=torch.bool, device=device)
    return TokenSelection(index=None, valid=None, keep=keep, counts=[seq] * batch)


def selection_from_keep_mask(keep: torch.Tensor, counts: list[int] | None = None) -> TokenSelection:
    """Turn a (B, T) keep mask into gather indices in original order, padded to the longest row.

    `counts` (kept tokens per row, host side) spares the one device-to-host sync this needs when the
    caller already knows them (top-k routing: they follow from the routable counts). Rows are
    ordered kept positions first, then the skipped ones (the filler of shorter rows), each ascending:
    the permutation that sorts by (not kept, position), built in O(T) from two running counts; when
    every row keeps the same count there is no filler and the kept positions are read off directly.
    """
    batch, seq = keep.shape
    if counts is None:
        counts = keep.sum(dim=1).tolist()
    width = max(counts) if batch else 0
    if batch and min(counts) == seq:
        return TokenSelection(index=None, valid=None, keep=keep, counts=counts)
    if min(counts, default=0) == width:
        # No filler: the kept positions in row-major order are the flat index (no sync: the size is known).
        flat = torch.nonzero_static(keep.reshape(-1), size=batch * width).squeeze(1)
        selection = TokenSelection(index=flat.view(batch, width) % seq, valid=None, keep=keep, counts=counts)
        selection._flat = flat
        return selection
    kept_before = keep.long().cumsum(dim=1)  # (B, T) kept tokens up to and including each position
    positions = torch.arange(seq, device=keep.device)
    n_kept = kept_before[:, -1:]
    slot = torch.where(keep, kept_before - 1, n_kept + positions - kept_before)  # skipped: after all kept ones
    index = torch.empty_like(slot).scatter_(1, slot, positions.expand(batch, seq))[:, :width]
    valid = torch.arange(width, device=keep.device).unsqueeze(0) < n_kept
    return TokenSelection(index=index, valid=valid, keep=keep, counts=counts)


def padded_selection(keep: torch.Tensor) -> TokenSelection:
    """`selection_from_keep_mask` with `index` and `valid` always materialised, never None: for callers
    that index by them directly (the token pruners in gamma_mod/prune), not for the MoD hot path."""
    selection = selection_from_keep_mask(keep)
    if selection.index is None:  # every token kept
        batch, seq = keep.shape
        index = torch.arange(seq, device=keep.device).expand(batch, seq)
        return TokenSelection(index=index, valid=torch.ones_like(keep, dtype=torch.bool), keep=keep,
                              counts=selection.counts)
    if selection.valid is None:  # no filler slot
        return TokenSelection(index=selection.index, valid=torch.ones_like(selection.index, dtype=torch.bool),
                              keep=keep, counts=selection.counts)
    return selection


def flat_token_index(index: torch.Tensor, seq: int) -> torch.Tensor:
    """(B, K) positions -> (B*K,) positions into the flattened (B*T) batch."""
    return (index + torch.arange(index.shape[0], device=index.device).unsqueeze(1) * seq).reshape(-1)


def gather_flat(x: torch.Tensor, flat: torch.Tensor, shape: tuple[int, int] | torch.Size) -> torch.Tensor:
    """x (B, T, ...) at flat batch positions (B*K,) -> (B, K, ...).

    Whole token rows are copied with `index_select`: a row copy per token instead of `gather`'s
    per-element indexing (several times faster on CPU, the same values).
    """
    return x.reshape(-1, *x.shape[2:]).index_select(0, flat).view(*shape, *x.shape[2:])


def scatter_flat(base: torch.Tensor, flat: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """A copy of `base` (B, T, ...) with rows at flat batch positions (B*K,) set to `values` (B, K, ...)."""
    out = base.reshape(-1, *base.shape[2:]).index_copy(0, flat, values.reshape(-1, *values.shape[2:]))
    return out.view(base.shape)


def gather_tokens(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x: (B, T, ...) or (1, T, ...) shared by every row -> (B, K, ...) at `index` (B, K)."""
    if x.shape[0] == 1:
        return x[0].index_select(0, index.reshape(-1)).view(*index.shape, *x.shape[2:])
    return gather_flat(x, flat_token_index(index, x.shape[1]), index.shape)


def scatter_tokens(
    base: torch.Tensor, index: torch.Tensor, values: torch.Tensor, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Write `values` (B, K, C) into a copy of `base` (B, T, C) at `index`; filler slots (valid False) keep `base`.

    With valid None (no filler) the values are copied straight in, without reading `base` at the slots.
    """
    if valid is not None:
        values = torch.where(valid.unsqueeze(-1), values, gather_tokens(base, index))
    return scatter_flat(base, flat_token_index(index, base.shape[1]), values)
