"""Analytic decoder TFLOPs, the paper's convention (γ-MoD eval/cal_flops.py).

LLM decoder only (no vision tower, no lm_head); per layer 8·T·d² + 4·T²·d + 6·T·d·d_ff for the T
tokens that go through it (Q/K/V/O projections, attention scores and weighted sum, the three MLP
matrices — multiply-adds counted as 2): dense layers see the whole sequence, MoD layers
int(T·(1 − skip)). The router (2·d per token) is below the figures' precision and is left out, as
in the paper.
"""

from __future__ import annotations


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
