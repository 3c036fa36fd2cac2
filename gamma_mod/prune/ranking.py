"""Ranking image tokens: the attention the ranking queries give each key, from one layer's own q/k.

    normed = layer.input_layernorm(h)                      (B, T, C)
    q      = rope(q_proj(normed) at the ranking queries)   (B, H, Q, D)   Q = queries per row (padded)
    k      = rope(k_proj(normed))                          (B, Hkv, T, D) every current token
    p      = softmax(q k^T * scaling, causal + padding)    (B, H, Q, T)   fp32, like eager attention
    score  = mean over heads, then over each row's queries (B, T)

These are exactly the rows of the layer's eager attention map the pruners read (the softmax runs
over every key the query sees, not only the image keys), at O(Q * T) cost instead of O(T^2), and
the model keeps SDPA (or eager) attention in every layer. Pure tensor code, tested on hand-made inputs.
"""

from __future__ import annotations

import torch
from transformers.models.llama.modeling_llama import repeat_kv, rotate_half

from ..mod.routing import gather_tokens, padded_selection, ranked_keep_mask


def query_mask(mode: str, prompt: torch.Tensor, is_image: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
    """Which tokens rank (B, T) bool. `prompt`: real tokens of the prompt (generated tokens excluded).

    last: each row's last prompt token. text: every non-image prompt token. instruction: with labels,
    the token before each answer span (PyramidDrop's training rule: labels[t] == -100 and
    labels[t + 1] != -100); rows without an answer span and calls without labels use `last`.
    """
    positions = torch.arange(prompt.shape[1], device=prompt.device)
    last_index = torch.where(prompt, positions, torch.full_like(positions, -1)).amax(dim=1, keepdim=True)
    last = (positions.unsqueeze(0) == last_index) & prompt
    if mode == "last":
        return last
    if mode == "text":
        return prompt & ~is_image
    if mode == "instruction":
        if labels is None:
            return last
        answered = labels != -100
        before = torch.zeros_like(answered)
        before[:, :-1] = ~answered[:, :-1] & answered[:, 1:]
        return torch.where(before.any(dim=1, keepdim=True), before, last)
    raise ValueError(f"unknown ranking query mode {mode!r}")


def key_attention(q: torch.Tensor, k: torch.Tensor, query_index: torch.Tensor, query_valid: torch.Tensor,
                  key_valid: torch.Tensor, scaling: float) -> torch.Tensor:
    """Mean attention probability each key receives from a row's queries.

    q: (B, H, Q, D) at sequence positions `query_index` (B, Q), `query_valid` (B, Q) False for filler
    queries; k: (B, H, T, D); key_valid: (B, T) real keys. Query i sees keys 0..query_index[i]
    (causal in the current order). Returns (B, T) fp32; a row without a valid query gives zeros.
    """
    logits = torch.matmul(q, k.transpose(2, 3)) * scaling  # (B, H, Q, T)
    keys = torch.arange(k.shape[2], device=k.device)
    allowed = (keys.view(1, 1, -1) <= query_index.unsqueeze(-1)) & key_valid.unsqueeze(1)  # (B, Q, T)
    logits = logits.float().masked_fill(~allowed.unsqueeze(1), torch.finfo(torch.float32).min)
    probs = torch.softmax(logits, dim=-1).mean(dim=1)  # (B, Q, T), mean over heads
    weights = query_valid.float()
    return (probs * weights.unsqueeze(-1)).sum(dim=1) / weights.sum(dim=1, keepdim=True).clamp(min=1.0)


@torch.no_grad()
def layer_key_attention(layer, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, queries: torch.Tensor,
                        key_valid: torch.Tensor) -> torch.Tensor:
    """`key_attention` with q and k from `layer`'s own input_layernorm, q_proj, k_proj and RoPE.

    hidden: (B, T, C) the layer's input; cos, sin: (B, T, D) at the tokens' positions; queries,
    key_valid: (B, T) bool. A Llama-style layer (`input_layernorm`, `self_attn.{q,k}_proj`).
    """
    attn = layer.self_attn
    batch, length, _ = hidden.shape
    normed = layer.input_layernorm(hidden)
    chosen = padded_selection(queries & key_valid)  # ranking queries, in order, padded per row
    q = attn.q_proj(gather_tokens(normed, chosen.index)).view(batch, chosen.index.shape[1], -1, attn.head_dim)
    k = attn.k_proj(normed).view(batch, length, -1, attn.head_dim)
    q = rope(q.transpose(1, 2), gather_tokens(cos, chosen.index), gather_tokens(sin, chosen.index))
    k = repeat_kv(rope(k.transpose(1, 2), cos, sin), attn.num_key_value_groups)
    return key_attention(q, k, chosen.index, chosen.valid, key_valid, attn.scaling)


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Llama RoPE of x (B, H, N, D) with tables (B, N, D), as `apply_rotary_pos_emb`."""
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    return x * cos + rotate_half(x) * sin


def keep_top_scoring(scores: torch.Tensor, candidates: torch.Tensor, n_keep: torch.Tensor) -> torch.Tensor:
    """(B, T) keep mask: every non-candidate token, and the `n_keep` (B,) best-scoring candidates of
    each row (ties to the earlier token)."""
    ranked = scores.float().masked_fill(~candidates, float("-inf"))
    return ranked_keep_mask(ranked, candidates, n_keep)
