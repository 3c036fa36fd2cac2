"""Analytic decoder TFLOPs, the paper's convention (γ-MoD eval/cal_flops.py), for every model family.

LLM decoder only (no vision tower, no lm_head), multiply-adds counted as 2, for the T tokens that go
through a layer (dense layers: the whole sequence; MoD layers: int(T·(1 − skip))). Per layer, with
d = hidden_size, d_ff = the family's intermediate_size, d_q = num_attention_heads·head_dim and
d_kv = num_key_value_heads·head_dim (GQA: K/V project to fewer heads):

    Q and O projections        2·T·d·d_q + 2·T·d_q·d  = 4·T·d·d_q
    K and V projections        2 · 2·T·d·d_kv         = 4·T·d·d_kv
    scores and weighted sum    2·T²·d_q + 2·T²·d_q    = 4·T²·d_q      (every query head, causal mask not halved)
    MLP (gate, up, down)       3 · 2·T·d·d_ff         = 6·T·d·d_ff

    layer_flops = 4·T·d·d_q + 4·T·d·d_kv + 4·T²·d_q + 6·T·d·d_ff

With d_q = d_kv = d (multi-head attention, LLaVA-1.5's Vicuna) this is the paper's 8·T·d² + 4·T²·d +
6·T·d·d_ff. `decoder_shape(config)` reads d, d_ff, d_q, d_kv and the layer count from any family's
config (the text config of a composite LLaVA-HF / OneVision / Qwen-VL config, or our LLaVA-fork config).
Per family: LLaVA-1.5 (HF and fork) d_q = d_kv = d; LLaVA-OneVision-Qwen2-7B and Qwen2.5-VL-7B d = d_q = 3584,
d_kv = 512 (28/4 heads of 128); Qwen3-VL-8B d = d_q = 4096, d_kv = 1024 (32/8 heads of 128). Left out, as
in the paper: the router (2·d per token), biases, norms (incl. Qwen3's q/k norms), rotary, and Qwen3-VL's
DeepStack additions (one add per visual token in three layers).

Token pruners (gamma_mod.prune) extend the convention by each layer's own token count: with N image
tokens and stages dropping before layers P_0 < P_1 < ..., layer l sees

    T_l = T                      for l < P_0
    T_l = T − (N − kept_s(N))    for P_s <= l < P_{s+1}     (kept_s: the pruner's kept count)

and the total is Σ_l layer_flops(T_l) (a MoD layer among them: int(T_l·(1 − skip))).
FastV K=2 R=0.5 on LLaVA-1.5-13B (T≈636 with 576 image tokens: 2 layers at T, 38 at T−288) saves
43.5% this way (the FastV paper quotes ≈45% with its own count); PDrop 8/16/24 λ=0.5 saves 54.7%.
The ranking pass (the ranking queries' q and every token's k in one layer, ~2·T·d² extra) is left
out like the router.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class DecoderShape:
    """What the convention needs of a decoder (module docstring); q_dim / kv_dim None mean `hidden`."""
    hidden: int
    ffn: int
    num_layers: int
    q_dim: int | None = None
    kv_dim: int | None = None

    def dims(self) -> dict[str, int | None]:
        """Keyword arguments of layer_flops / decoder_tflops / tflops_from_layer_tokens / per_sample_tflops."""
        return dict(hidden=self.hidden, ffn=self.ffn, q_dim=self.q_dim, kv_dim=self.kv_dim)


def decoder_shape(config: Any) -> DecoderShape:
    """The decoder of any family's config: the text config of a composite one (LlavaConfig,
    LlavaOnevisionConfig, Qwen2_5_VLConfig, Qwen3VLConfig, their MoD twins) or the config itself
    (our LlavaLlamaConfig). head_dim: the config's own when set (Qwen3), else hidden / heads."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    heads = text.num_attention_heads
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    return DecoderShape(hidden=text.hidden_size, ffn=text.intermediate_size, num_layers=text.num_hidden_layers,
                        q_dim=heads * head_dim, kv_dim=kv_heads * head_dim)


def layer_flops(tokens: int, hidden: int, ffn: int, q_dim: int | None = None, kv_dim: int | None = None) -> float:
    """One decoder layer over `tokens` tokens (module docstring); q_dim / kv_dim default to hidden."""
    q = hidden if q_dim is None else q_dim
    kv = q if kv_dim is None else kv_dim
    return 4 * tokens * hidden * q + 4 * tokens * hidden * kv + 4 * tokens**2 * q + 6 * tokens * hidden * ffn


def decoder_tflops(seq_len: int, hidden: int, ffn: int, num_layers: int, mod_layers: list[int] | int,
                   skip: float | dict[int, float], *, q_dim: int | None = None, kv_dim: int | None = None) -> float:
    """TFLOPs of one `seq_len`-token sequence through the decoder.

    `mod_layers`: MoD layer indices, or just their count (each layer's cost depends only on its
    token count, so which ones does not matter). `skip`: the fraction of the sequence a MoD layer
    skips, one value for all or per layer index (a MoD layer missing from the dict skips nothing).
    `q_dim` / `kv_dim`: query and key/value projection widths (GQA), default hidden.
    """
    mod = set(range(num_layers - mod_layers, num_layers)) if isinstance(mod_layers, int) else set(mod_layers)
    if not mod <= set(range(num_layers)):
        raise ValueError(f"mod_layers {sorted(mod)} outside 0..{num_layers - 1}")
    total = 0.0
    for layer in range(num_layers):
        tokens = seq_len
        if layer in mod:
            s = skip.get(layer, 0.0) if isinstance(skip, dict) else skip
            if not 0.0 <= s <= 1.0:
                raise ValueError(f"skip of layer {layer} must be in [0, 1], got {s}")
            # The paper's floor, made immune to float error: 10 · (1 − 0.8) is 1.999…, meaning 2.
            tokens = int(seq_len * (1 - s) + 1e-9)
        total += layer_flops(tokens, hidden, ffn, q_dim, kv_dim)
    return total / 1e12


def tflops_from_config(config, seq_len: int, skip: float | dict[int, float] | None = None) -> float:
    """TFLOPs of one sequence through a model of any family (decoder_shape); `skip` defaults to the
    configured per-layer ratio (`capacity_factor`, or the p-MoD schedule in `layer_capacity`) of a
    config with MoD layers (`mod_config()`), else 0 (a plain HF model is dense)."""
    shape = decoder_shape(config)
    mod = config.mod_config() if hasattr(config, "mod_config") else None
    layers = mod.mod_layers_idx if mod else []
    if skip is None:
        skip = {i: mod.skip_ratio(i) for i in layers} if mod else 0.0
    return decoder_tflops(seq_len, shape.hidden, shape.ffn, shape.num_layers, layers, skip,
                          q_dim=shape.q_dim, kv_dim=shape.kv_dim)


def tflops_from_layer_tokens(tokens: Sequence[float], hidden: int, ffn: int, *, q_dim: int | None = None,
                             kv_dim: int | None = None) -> float:
    """TFLOPs with layer l seeing tokens[l] tokens (the convention's per-layer formula, summed)."""
    return sum(layer_flops(t, hidden, ffn, q_dim, kv_dim) for t in tokens) / 1e12


def pruned_layer_tokens(seq_len: int, n_image: int, num_layers: int, pruner) -> list[int]:
    """Tokens through each layer of one sequence when `pruner` (gamma_mod.prune) drops image tokens."""
    pruner.validate(num_layers)
    tokens = [seq_len] * num_layers
    for s, stage in enumerate(pruner.stages()):
        kept = int(pruner.keep_counts(torch.tensor([n_image]), s)[0])
        for layer in range(stage.layer, num_layers):
            tokens[layer] = seq_len - (n_image - min(kept, n_image))
    return tokens


def pruned_decoder_tflops(seq_len: int, n_image: int, hidden: int, ffn: int, num_layers: int, pruner,
                          mod_layers: Sequence[int] = (), skip: float | dict[int, float] = 0.0, *,
                          q_dim: int | None = None, kv_dim: int | None = None) -> float:
    """TFLOPs of one sequence with `n_image` image tokens through a pruned decoder (module docstring)."""
    tokens = pruned_layer_tokens(seq_len, n_image, num_layers, pruner)
    for layer in mod_layers:
        s = skip.get(layer, 0.0) if isinstance(skip, dict) else skip
        tokens[layer] = int(tokens[layer] * (1 - s) + 1e-9)
    return tflops_from_layer_tokens(tokens, hidden, ffn, q_dim=q_dim, kv_dim=kv_dim)


def measured_layer_tokens(attention_mask: torch.Tensor, num_layers: int, prune_stats=None,
                          mod_stats: dict | None = None) -> torch.Tensor:
    """(B, L) tokens each layer really processed per row in one prefill: every real token, or what
    a pruner left (`GammaLlamaModel.last_prune_stats`), or, in a MoD layer, what it kept
    (`ModForwardContext.stats`, keep masks in step coordinates)."""
    real = attention_mask.bool()
    counts = real.sum(dim=1, keepdim=True).expand(-1, num_layers).clone()
    if prune_stats is not None:
        counts = torch.stack(prune_stats.layer_tokens, dim=1).to(counts)
    for layer, stats in (mod_stats or {}).items():
        counts[:, layer] = (stats.keep & real).sum(dim=1)
    return counts


def per_sample_tflops(layer_tokens: torch.Tensor, hidden: int, ffn: int, *, q_dim: int | None = None,
                      kv_dim: int | None = None) -> torch.Tensor:
    """(B, L) token counts -> (B,) TFLOPs of each sample (its own T_l², not the batch mean's)."""
    # layer_flops is polynomial in the token count, so it applies to a float tensor elementwise.
    return layer_flops(layer_tokens.double(), hidden, ffn, q_dim, kv_dim).sum(dim=1) / 1e12
