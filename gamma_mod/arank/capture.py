"""Attention probabilities per layer, read with hooks that leave the model's forward untouched.

SDPA and flash attention never materialise the probabilities, and switching the model to eager
attention (or patching its forward, as the official code does) changes what is measured and breaks
ordinary forwards. Instead a forward pre-hook on each layer's `self_attn` receives exactly what the
attention receives — the normed hidden states and the RoPE tables (cos, sin) — and recomputes
q, k with the layer's own projections (and its per-head q/k norms where it has them: Qwen3-VL;
grouped-query attention repeats k per query head): softmax(q k^T * scaling + causal mask) in fp32.
Works on every model family (gamma_mod/families: the decoder layers are found through the adapter;
the rotary tables the layers receive are (B, T, D) for Qwen's M-RoPE too). The hook
returns None, so the model's own computation runs unchanged whatever kernel is configured.

Padding: a pre-hook on the decoder stack reads the forward's 2-D attention mask; each sample's
real tokens (one contiguous block: left or right padding) are cut out BEFORE q, k are formed, so a
padded sample gives the same map as the sample alone and pad columns never enter the softmax.
The sink receives one (layer, sample) map at a time and should keep only numbers (ranks): at
T = 2500 with 32 heads one map is 800 MB in fp32.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, repeat_kv

from ..families import get_family
from ..mod.layer import is_mod_layer

# Called with (layer_idx, sample_idx_in_batch, probs (H, t, t)) for every layer and sample of a forward.
AttentionSink = Callable[[int, int, torch.Tensor], None]


def attention_probs(attn, hidden: torch.Tensor, cos_sin: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """(B, t, C) normed hidden states of contiguous real tokens -> (B, H, t, t) causal probabilities in fp32."""
    batch, length, _ = hidden.shape
    shape = (batch, length, -1, attn.head_dim)
    q = attn.q_proj(hidden).view(shape)  # (B, t, H, D)
    k = attn.k_proj(hidden).view(shape)  # (B, t, H_kv, D)
    if getattr(attn, "q_norm", None) is not None:  # per-head RMSNorm before RoPE (Qwen3)
        q = attn.q_norm(q)
    if getattr(attn, "k_norm", None) is not None:
        k = attn.k_norm(k)
    q, k = q.transpose(1, 2), k.transpose(1, 2)  # (B, H, t, D), (B, H_kv, t, D)
    cos, sin = cos_sin
    q, k = apply_rotary_pos_emb(q, k, cos, sin)
    k = repeat_kv(k, attn.num_key_value_groups)  # grouped-query attention: one k per query head
    scores = (q.float() @ k.float().transpose(-1, -2)) * attn.scaling  # (B, H, t, t)
    future = torch.ones(length, length, dtype=torch.bool, device=hidden.device).triu(1)
    return scores.masked_fill(future, float("-inf")).softmax(dim=-1)


def real_blocks(attention_mask: torch.Tensor | None, batch: int, length: int) -> list[slice]:
    """Per sample, the span of its real tokens; padding may sit left or right but not inside."""
    if attention_mask is None:
        return [slice(0, length)] * batch
    if attention_mask.dim() != 2 or attention_mask.shape != (batch, length):
        raise ValueError(f"ARank needs a 2-D (batch, length) attention mask matching the input "
                         f"{(batch, length)}, got shape {tuple(attention_mask.shape)}")
    blocks = []
    for b, row in enumerate(attention_mask.bool()):
        idx = row.nonzero().squeeze(1)
        if idx.numel() == 0:
            raise ValueError(f"sample {b} of the batch has no real tokens")
        start, stop = int(idx[0]), int(idx[-1]) + 1
        if idx.numel() != stop - start:
            raise ValueError(f"sample {b}: padding inside the sequence; ARank needs left or right padding")
        blocks.append(slice(start, stop))
    return blocks


def _select(table: torch.Tensor, b: int, block: slice) -> torch.Tensor:
    """RoPE table (B or 1, T, D) -> (1, t, D) for sample b."""
    return table[b if table.shape[0] > 1 else 0, block].unsqueeze(0)


@contextmanager
def capture_attention(model, sink: AttentionSink) -> Iterator[None]:
    """While active, every forward of `model` (a dense model of any family: our LlavaLlamaForCausalLM,
    or a Hugging Face family's ForConditionalGeneration) feeds `sink`.

    Meant for whole-sequence forwards (no KV cache): with a cache the hook sees only the new
    tokens and the map would miss the cached keys, so that case is refused. The (cos, sin) a layer's
    attention receives are its positions' own, Qwen's multimodal M-RoPE included (transformers 5.24 merges
    the three sections in the rotary module), so the same rotation applies to every family.
    """
    family = get_family(model)
    decoder = family.language_model(model)  # its forward receives the 2-D attention mask
    layers = family.decoder_layers(model)
    mod_layers = [i for i, layer in enumerate(layers) if is_mod_layer(layer)]
    if mod_layers:
        # The kept-token attention of MoD layers sees a subsequence: not the map ARank measures.
        raise ValueError(f"ARank is measured on the dense (stage-1) model; this model already has MoD layers "
                         f"{mod_layers}")
    state: dict[str, torch.Tensor | None] = {"mask": None}

    def read_mask(module, args, kwargs):
        mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
        state["mask"] = mask.detach() if mask is not None else None

    def layer_hook(module, args, kwargs, idx: int):
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        if cache is not None and cache.get_seq_length(idx) > 0:  # tokens cached before this forward
            raise ValueError("ARank capture needs whole-sequence forwards; call the model with use_cache=False")
        cos, sin = kwargs["position_embeddings"]
        batch, length, _ = hidden.shape
        with torch.no_grad():
            for b, block in enumerate(real_blocks(state["mask"], batch, length)):
                probs = attention_probs(module, hidden[b:b + 1, block], (_select(cos, b, block), _select(sin, b, block)))
                sink(idx, b, probs[0])

    handles = [decoder.register_forward_pre_hook(read_mask, with_kwargs=True)]
    try:
        for idx, layer in enumerate(layers):
            handles.append(layer.self_attn.register_forward_pre_hook(
                lambda m, a, k, idx=idx: layer_hook(m, a, k, idx), with_kwargs=True))
        yield
    finally:
        for handle in handles:
            handle.remove()
