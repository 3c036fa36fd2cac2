"""Which cached keys of a MoD layer are real.

A MoD layer appends only the tokens it processed to its KV cache; rows of a batch may keep
different numbers of tokens, so the cache rows are padded with filler slots. We record, per
layer, a (B, S) bool of the slots that hold a real (kept, non-padding) key, on the cache object
itself so that it travels with the cache through `generate()` and beam reordering.
"""

from __future__ import annotations

import torch

_ATTR = "_gamma_mod_key_valid"


def cached_key_validity(cache, layer_idx: int) -> torch.Tensor | None:
    if cache is None:
        return None
    return getattr(cache, _ATTR, {}).get(layer_idx)


def append_key_validity(cache, layer_idx: int, valid: torch.Tensor) -> None:
    store = getattr(cache, _ATTR, None)
    if store is None:
        store = {}
        setattr(cache, _ATTR, store)
    previous = store.get(layer_idx)
    store[layer_idx] = valid if previous is None else torch.cat([previous, valid], dim=1)
