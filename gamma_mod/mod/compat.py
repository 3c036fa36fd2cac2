"""Official-compatible MoD rules (`mod.compat: official`): what the released gamma-MoD weights were trained
and evaluated with, so that the paper's numbers can be reproduced from them.

Reproduces, from the Gamma-MOD repository (github.com/Yaxin9Luo/Gamma-MOD):
  llava_hr  gamma_mod/model/language_model/llava_llama_mod.py  (MoDLlamaDecoderLayer_forward[_inference])
  mgm       gamma_mod/MGM/mgm/model/language_model/mod_mgm_llama.py  (its Mini-Gemini twin)

Training (the training class; `self.training` here), R = region (llava_hr 1024 + 35, mgm 2880), T = padded length:
    T > R          the first R positions compete, every later one is kept; kept count
                   k = ceil(T * (1 - 0.5 * R / T)) per row (skip ratio 0.5 hard-coded, the config's capacity_factor unused)
    T <= R  llava_hr  nothing is skipped
            mgm       k = ceil(0.5 * T); tokens whose label is -100 (prompt, padding) are preferred, the
                      answer tokens compete (no labels: every token competes)
    routing loss   2-way CE over ALL B x T tokens (question, padding included), target 1 for kept
Inference (the Eval* class; `not self.training` here):
    prefill        keep p > 0.005 over ALL tokens, question included
    decode         llava_hr: skip the new token when p < 0.5 on batch row 0 (the whole batch follows row 0);
                   mgm: never skipped (its check is commented out)
                   a skipped token adds nothing to the layer's KV cache
Positions of kept tokens, per row: renumbered 0..k-1 in order (training: arange(top_k); prefill:
arange(tokens_chosen)); a decode token gets this layer's own kept-cache length (llava_hr) or its
original position (mgm: layer 0's cache length - 1). Dense layers keep original positions.

Deliberate deviations (all outside the cases the official code runs, or below its precision):
  * Batch > 1 at inference: the official prefill flattens the batch (batch 1 only); here the threshold
    and the renumbering apply per row, padding is never attended to, and decode follows row 0 as officially.
  * Positions count real (non-padding) kept tokens only; with right padding (official training) this is
    the official arange for every real token. A multi-token forward on top of a cache (chunked prefill,
    which the official code cannot run unless nothing is skipped) continues the renumbering.
  * Ranking: the official `topk(p + priority)` in the model dtype; here priority first, then p in fp32,
    ties to the lower position.
  * Which rule runs follows train/eval mode instead of which class was instantiated.
  * mgm decode: the file's decode path (zero mask of layer 0's length, position layer-0 length - 1) does not
    run under its pinned transformers 4.36.2 once a layer skipped a prefill token (mask size check, RoPE
    table sliced to this layer's length); we take its evident intent: original position, attend to the
    whole kept cache, never skip.
"""

from __future__ import annotations

import math

import torch

IGNORE_INDEX = -100


def official_train_kept_count(seq_len: int, region: int, layout: str) -> int | None:
    """Kept tokens per row in official training, or None when the rule keeps every token.

    The float arithmetic is the official one, so its rounding (e.g. an MGM length where
    T * (1 - 1440 / T) lands just above an integer) is reproduced.
    """
    if seq_len > region:
        return int(math.ceil(seq_len * (1 - (region * 0.5) / seq_len)))
    if layout == "mgm":
        return int(math.ceil(seq_len * 0.5))
    return None


def keep_top_with_priority(scores: torch.Tensor, priority: torch.Tensor, n_keep: int) -> torch.Tensor:
    """Keep the first `n_keep` tokens of each row ordered by (priority first, then score descending,
    then position). scores: (B, T) float, priority: (B, T) bool -> (B, T) bool."""
    batch, seq = scores.shape
    n_keep = max(0, min(n_keep, seq))
    order = scores.argsort(dim=1, descending=True, stable=True)
    order = order.gather(1, (~priority).gather(1, order).long().argsort(dim=1, stable=True))
    keep = torch.zeros(batch, seq, dtype=torch.bool, device=scores.device)
    return keep.scatter(1, order[:, :n_keep], True)


def official_train_keep(
    scores: torch.Tensor, region: int, layout: str, labels: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(keep, competing): the official training selection and the tokens that competed for it. (B, T) bool."""
    batch, seq = scores.shape
    n_keep = official_train_kept_count(seq, region, layout)
    if n_keep is None:
        everything = torch.ones_like(scores, dtype=torch.bool)
        return everything, ~everything
    if seq > region:
        priority = (torch.arange(seq, device=scores.device) >= region).expand(batch, seq)
    elif labels is not None:
        priority = labels[:, -seq:] == IGNORE_INDEX
    else:
        priority = torch.zeros_like(scores, dtype=torch.bool)
    return keep_top_with_priority(scores, priority, n_keep), ~priority


def official_decode_tokens(decode: torch.Tensor | None, shape: tuple[int, int], device) -> torch.Tensor:
    """Tokens the official decode rule applies to: the generated ones when known, else every token of a
    one-token forward (the official `seq_len <= 1`)."""
    if decode is not None:
        return decode
    return torch.full(shape, shape[1] == 1, dtype=torch.bool, device=device)


def official_inference_keep(
    scores: torch.Tensor,
    decode: torch.Tensor,
    layout: str,
    prefill_threshold: float,
    decode_threshold: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(keep, competing) at inference: prefill threshold over all tokens, the layout's decode rule. (B, T) bool."""
    keep = scores > prefill_threshold
    if layout == "mgm":
        return keep | decode, ~decode
    # Row 0 decides for the whole batch at each decode column (the official `route_probabilities[0, 0]`).
    row0_keeps = (scores[:1] >= decode_threshold).expand_as(keep)
    return torch.where(decode, row0_keeps, keep), torch.ones_like(keep)


def official_positions(
    keep_real: torch.Tensor,
    past_kept: torch.Tensor | None,
    original: torch.Tensor | None = None,
    original_at: torch.Tensor | None = None,
) -> torch.Tensor:
    """RoPE positions of the tokens of one MoD layer, (B, T) long.

    A kept real token gets the number of real tokens this layer kept before it: `past_kept` (B,) from its
    cache plus its rank in this forward. Where `original_at` is True (mgm decode tokens) the
    `original` position ids are used instead. Skipped and padding tokens get a harmless clamp.
    """
    positions = keep_real.long().cumsum(dim=1) - 1
    if past_kept is not None:
        positions = positions + past_kept.view(-1, 1).long()
    positions = positions.clamp(min=0)
    if original_at is not None and original is not None:
        positions = torch.where(original_at, original.expand_as(positions).to(positions.device), positions)
    return positions
