"""LLaVA's modality-grouped length sampler (`group_by_modality_length: True` in the official recipes).

The rule of haotian-liu/LLaVA llava/train/llava_trainer.py (LengthGroupedSampler,
get_modality_length_grouped_indices, get_length_grouped_indices, split_to_even_chunks), our code:

  lengths are signed: l > 0 a sample with an image, l < 0 a text-only sample of length -l.
  megabatch = world_size x batch_size samples: one micro-batch per rank (LLaVA passes world_size x
  gradient-accumulation steps as world_size, so a megabatch spans one optimizer step).
  1. length grouping of one modality: shuffle; cut into megabatches; sort each by length, longest
     first (ties keep the shuffled order); split it into world_size chunks: if it does not divide
     evenly, chunk k = every world_size-th sample from k; else greedily, each next sample goes to the
     chunk with the smallest total length so far (the first such chunk), a full chunk takes no more.
  2. Both modalities present: group each (1.), cut each order into megabatches again, hold back each
     modality's LAST megabatch, shuffle the others together, and append the two held-back ones as a
     final megabatch sorted by index: every other megabatch holds one modality only.
     One modality only: step 1 alone.

Deviations, on purpose:
  * One torch.Generator seeded with seed + epoch draws every shuffle (LLaVA draws the per-modality
    shuffles from the global torch RNG and the megabatch shuffle from an unseeded generator): the order
    is a function of (lengths, batch, world, seed, epoch) only, the same on every rank and after a resume.
  * Lengths are token counts with the image tokens (our dataset is tokenized up front); LLaVA counts
    whitespace-separated words. Zero-length samples are an error, as in LLaVA.
  * A text-only set is grouped by |l|; LLaVA passes its negative lengths on unchanged (shortest first).
  * Gamma-MOD's copy (gamma_mod/train/llava_trainer.py, an older LLaVA) uses world_size without the
    accumulation factor, requires both modalities and moves a full leftover megabatch to the front;
    we follow the current LLaVA rule above.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import Sampler


def split_to_even_chunks(indices: list[int], lengths: Sequence[int], num_chunks: int) -> list[list[int]]:
    """`indices` (longest first) -> `num_chunks` chunks of equal count and balanced total length."""
    if len(indices) % num_chunks:
        return [indices[k::num_chunks] for k in range(num_chunks)]
    per_chunk = len(indices) // num_chunks
    chunks: list[list[int]] = [[] for _ in range(num_chunks)]
    totals = [0.0] * num_chunks
    for index in indices:
        shortest = totals.index(min(totals))
        chunks[shortest].append(index)
        totals[shortest] += lengths[index]
        if len(chunks[shortest]) == per_chunk:
            totals[shortest] = float("inf")
    return chunks


def length_grouped_indices(lengths: Sequence[int], batch_size: int, world_size: int,
                           generator: torch.Generator) -> list[int]:
    """Rule step 1 over positive `lengths`: a permutation of range(len(lengths))."""
    order = torch.randperm(len(lengths), generator=generator).tolist()
    size = world_size * batch_size
    out: list[int] = []
    for start in range(0, len(order), size):
        megabatch = sorted(order[start:start + size], key=lambda i: lengths[i], reverse=True)
        for chunk in split_to_even_chunks(megabatch, lengths, world_size):
            out.extend(chunk)
    return out


def modality_length_grouped_indices(lengths: Sequence[int], batch_size: int, world_size: int,
                                    generator: torch.Generator) -> list[int]:
    """Rule step 2: a permutation of range(len(lengths)) from signed lengths."""
    zero = [i for i, n in enumerate(lengths) if n == 0]
    if zero:
        raise ValueError(f"{len(zero)} samples have length 0 (e.g. index {zero[0]}); lengths must be non-zero")
    if all(n > 0 for n in lengths) or all(n < 0 for n in lengths):
        return length_grouped_indices([abs(n) for n in lengths], batch_size, world_size, generator)
    image = [(i, n) for i, n in enumerate(lengths) if n > 0]
    text = [(i, -n) for i, n in enumerate(lengths) if n < 0]
    size = world_size * batch_size
    megabatches: list[list[int]] = []
    held_back: list[int] = []
    for group in (image, text):
        indices, group_lengths = zip(*group)
        order = [indices[i] for i in length_grouped_indices(group_lengths, batch_size, world_size, generator)]
        cut = [order[s:s + size] for s in range(0, len(order), size)]
        megabatches.extend(cut[:-1])
        held_back.extend(cut[-1])
    shuffled = [megabatches[i] for i in torch.randperm(len(megabatches), generator=generator).tolist()]
    shuffled.append(sorted(held_back))
    return [i for megabatch in shuffled for i in megabatch]


class ModalityLengthGroupedSampler(Sampler[int]):
    """Indices of one epoch by the rule above; `set_epoch` (called by the Trainer) reshuffles.

    The Trainer's dataloader gives consecutive `batch_size` slices to ranks in turn, so chunk k of a
    megabatch is one rank's micro-batch.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, world_size: int = 1, seed: int = 0) -> None:
        if batch_size < 1 or world_size < 1:
            raise ValueError(f"batch_size and world_size must be >= 1, got {batch_size}, {world_size}")
        self.lengths = lengths  # an Arrow column's numpy view stays one (no per-sample Python ints)
        self.batch_size = batch_size
        self.world_size = world_size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(modality_length_grouped_indices(self.lengths, self.batch_size, self.world_size, generator))
