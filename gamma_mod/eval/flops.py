"""Analytic decoder TFLOPs, the paper's convention (γ-MoD eval/cal_flops.py).

LLM decoder only (no vision tower, no lm_head); per layer 8*T*d^2 + 4*T^2*d + 6*T*d*d_ff for the T
tokens that go through it: dense layers the whole sequence, MoD layers int(T * (1 - skip)).
"""

from __future__ import annotations


def layer_flops(tokens: int, hidden: int, ffn: int) -> float:
    return 8 * tokens * hidden**2 + 4 * tokens**2 * hidden + 6 * tokens * hidden * ffn


def decoder_tflops(seq_len: int, hidden: int, ffn: int, num_layers: int, mod_layers: list[int] | int,
                   skip: float | dict[int, float]) -> float:
    """`mod_layers`: indices, or a count (then the last that many layers... any choice: cost is per layer).
    `skip`: fraction of the sequence a MoD layer skips, one value or per layer."""
    mod = set(range(num_layers - mod_layers, num_layers)) if isinstance(mod_layers, int) else set(mod_layers)
    total = 0.0
    for layer in range(num_layers):
        tokens = seq_len
        if layer in mod:
            s = skip.get(layer, 0.0) if isinstance(skip, dict) else skip
            tokens = int(seq_len * (1 - s))
        total += layer_flops(tokens, hidden, ffn)
    return total / 1e12


def tflops_from_config(config, seq_len: int, skip: float | dict[int, float] | None = None) -> float:
    """TFLOPs of one sequence through a gamma_mod model; `skip` defaults to the configured ratio."""
    mod = config.mod_config()
    layers = mod.mod_layers_idx if mod else []
    if skip is None:
        skip = {i: mod.skip_ratio(i) for i in layers} if mod else 0.0
    return decoder_tflops(seq_len, config.hidden_size, config.intermediate_size, config.num_hidden_layers, layers, skip)
