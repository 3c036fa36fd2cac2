"""Analytic decoder TFLOPs, the paper's convention (γ-MoD eval/cal_flops.py).

LLM decoder only (no vision tower, no lm_head); per layer 8·T·d² + 4·T²·d + 6·T·d·d_ff for the T
tokens that go through it (Q/K/V/O projections, attention scores and weighted sum, the three MLP
matrices — multiply-adds counted as 2): dense layers see the whole sequence, MoD layers
int(T·(1 − skip)). The router (2·d per token) is below the figures' precision and is left out, as
in the paper.

Token pruners (gamma_mod.prune) extend the convention by each layer's own token count: with N image
tokens and stages dropping before layers P_0 < P_1 < ..., layer l sees

    T_l = T                      for l < P_0
    T_l = T − (N − kept_s(N))    for P_s <= l < P_{s+1}     (kept_s: the pruner's kept count)

and the total is Σ_l 8·T_l·d² + 4·T_l²·d + 6·T_l·d·d_ff (a MoD layer among them: int(T_l·(1 − skip))).
FastV K=2 R=0.5 on LLaVA-1.5-13B (T≈636 with 576 image tokens: 2 layers at T, 38 at T−288) saves
43.5% this way (the FastV paper quotes ≈45% with its own count); PDrop 8/16/24 λ=0.5 saves 54.7%.
The ranking pass (the ranking queries' q and every token's k in one layer, ~2·T·d² extra) is left
out like the router.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def layer_flops(tokens: int, hidden: int, ffn: int) -> float:
    return 8 * tokens * hidden**2 + 4 * tokens**2 * hidden + 6 * tokens * hidden * ffn


def decoder_tflops(seq_len: int, hidden: int, ffn: int, num_layers: int, mod_layers: list[int] | int,
                   skip: float | dict[int, float]) -> float:
    """TFLOPs of one `seq_len`-token sequence through the decoder.

    `mod_layers`: MoD layer indices, or just their count (each layer's cost depends only on its
    token count, so which ones does not matter). `skip`: the fraction of the sequence a MoD layer
    skips, one value for all or per layer index (a MoD layer missing from the dict skips nothing).
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
        total += layer_flops(tokens, hidden, ffn)
    return total / 1e12


def tflops_from_config(config, seq_len: int, skip: float | dict[int, float] | None = None) -> float:
    """TFLOPs of one sequence through a gamma_mod model (LlavaLlamaConfig); `skip` defaults to the
    configured per-layer ratio (`capacity_factor`, or the p-MoD schedule in `layer_capacity`)."""
    mod = config.mod_config()
    layers = mod.mod_layers_idx if mod else []
    if skip is None:
        skip = {i: mod.skip_ratio(i) for i in layers} if mod else 0.0
    return decoder_tflops(seq_len, config.hidden_size, config.intermediate_size, config.num_hidden_layers, layers, skip)


def tflops_from_layer_tokens(tokens: Sequence[float], hidden: int, ffn: int) -> float:
    """TFLOPs with layer l seeing tokens[l] tokens (the convention's per-layer formula, summed)."""
    return sum(layer_flops(t, hidden, ffn) for t in tokens) / 1e12


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
                          mod_layers: Sequence[int] = (), skip: float | dict[int, float] = 0.0) -> float:
    """TFLOPs of one sequence with `n_image` image tokens through a pruned decoder (module docstring)."""
    tokens = pruned_layer_tokens(seq_len, n_image, num_layers, pruner)
    for layer in mod_layers:
        s = skip.get(layer, 0.0) if isinstance(skip, dict) else skip
        tokens[layer] = int(tokens[layer] * (1 - s) + 1e-9)
    return tflops_from_layer_tokens(tokens, hidden, ffn)


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


def per_sample_tflops(layer_tokens: torch.Tensor, hidden: int, ffn: int) -> torch.Tensor:
    """(B, L) token counts -> (B,) TFLOPs of each sample (its own T_l², not the batch mean's)."""
    t = layer_tokens.double()
    return (8 * t * hidden**2 + 4 * t**2 * hidden + 6 * t * hidden * ffn).sum(dim=1) / 1e12
