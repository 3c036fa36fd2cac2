"""Which cached keys of a MoD layer are real.

A MoD layer appends only the tokens it processed to its KV cache; rows of a batch may keep
different numbers of tokens, so the cache rows are padded with filler slots. We record, per
layer, which slots hold a real (kept, non-padding) key, on the cache object itself so that it
travels with the cache through `generate()`.

While every slot is real (no padding, every row kept the same count: the usual case) only the
slot count is kept, so decode steps neither grow a mask nor rebuild one from it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

_ATTR = "_gamma_mod_key_valid"


@dataclass
class KeyValidity:
    batch: int
    length: int
    # (batch, length) bool, True for a real key; None while every slot is real.
    mask: torch.Tensor | None = None

    def materialise(self, device) -> torch.Tensor:
        if self.mask is not None:
            return self.mask
        return torch.ones(self.batch, self.length, dtype=torch.bool, device=device)


def key_validity_record(cache, layer_idx: int) -> KeyValidity | None:
    if cache is None:
        return None
    return getattr(cache, _ATTR, {}).get(layer_idx)


def cached_key_validity(cache, layer_idx: int, device=None) -> torch.Tensor | None:
    """(B, S) bool of the real cached keys of a layer, or None when nothing is cached yet."""
    record = key_validity_record(cache, layer_idx)
    return None if record is None else record.materialise(device)


def append_key_validity(cache, layer_idx: int, valid: torch.Tensor | None, batch: int, width: int) -> None:
    """Record `width` new slots per row; `valid` (B, width) bool, or None when every new slot is real."""
    store = getattr(cache, _ATTR, None)
    if store is None:
        store = {}
        setattr(cache, _ATTR, store)
    previous = store.get(layer_idx)
    if previous is None:
        store[layer_idx] = KeyValidity(batch, width, valid)
        return
    if valid is None and previous.mask is None:
        previous.length += width
        return
    device = valid.device if valid is not None else previous.mask.device
    new = valid if valid is not None else torch.ones(batch, width, dtype=torch.bool, device=device)
    store[layer_idx] = KeyValidity(batch, previous.length + width, torch.cat([previous.materialise(device), new], dim=1))
