"""Attention probabilities per layer, read with hooks that leave the model's forward untouched.

A forward pre-hook on each layer's `self_attn` receives the normed hidden states and the RoPE
tables; we recompute q and k with the layer's own projections and form softmax(q k^T / sqrt(d))
with the causal mask in fp32. The model's own computation (SDPA or flash) runs unchanged, so
ARank works whatever attention kernel is configured, and the hook returns nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, repeat_kv

# Called with (layer_idx, probs (B, H, T, T)) for every layer of every forward.
AttentionSink = Callable[[int, torch.Tensor], None]


def attention_probs(attn, hidden: torch.Tensor, cos_sin: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    batch, length, _ = hidden.shape
    shape = (batch, length, -1, attn.head_dim)
    q = attn.q_proj(hidden).view(shape).transpose(1, 2)
    k = attn.k_proj(hidden).view(shape).transpose(1, 2)
    cos, sin = cos_sin
    q, k = apply_rotary_pos_emb(q, k, cos, sin)
    k = repeat_kv(k, attn.num_key_value_groups)
    scores = (q.float() @ k.float().transpose(-1, -2)) * attn.scaling  # (B, H, T, T)
    causal = torch.ones(length, length, dtype=torch.bool, device=hidden.device).triu(1)
    return scores.masked_fill(causal, float("-inf")).softmax(dim=-1)


@contextmanager
def capture_attention(model, sink: AttentionSink) -> Iterator[None]:
    from ..mod.layer import MoDDecoderLayer

    layers = model.model.layers
    if any(isinstance(layer, MoDDecoderLayer) for layer in layers):
        raise ValueError("ARank is measured on the dense (stage-1) model; this model already has MoD layers")
    handles = []
    for idx, layer in enumerate(layers):
        def hook(module, args, kwargs, idx=idx):
            hidden = kwargs.get("hidden_states", args[0] if args else None)
            with torch.no_grad():
                sink(idx, attention_probs(module, hidden, kwargs["position_embeddings"]))

        handles.append(layer.self_attn.register_forward_pre_hook(hook, with_kwargs=True))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
