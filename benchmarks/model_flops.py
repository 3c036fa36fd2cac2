"""Analytic forward FLOPs of the parts of a LLaVA-style model (multiply-add = 2), for the benchmarks'
whole-model ideals. The decoder layer count is the paper's (gamma_mod/eval/flops.py); the rest is
what the same convention gives for the other matmuls:

    vision tower   per layer 8 N dv^2 + 4 N^2 dv + 4 N dv dv_ff  (N = patches + cls; CLIP MLP: 2 matrices)
                   + the patch embedding 2 * patches * 3 p^2 * dv
    projector      2 * n_img * (dv d + d d)                      (mlp2x_gelu)
    decoder layer  8 t d^2 + 4 t^2 d + 6 t d d_ff                  (t tokens through the layer)
    MoD router     4 T d                                          (Linear(d, 2) on every token)
    lm_head        2 t d V                                        (t positions with logits)
Norms, RoPE, softmax, the loss and the optimizer are not FLOP-counted: they are the same in a dense
model and its MoD twin except inside MoD layers.
"""

from __future__ import annotations


def decoder_layer_flops(tokens: int, d: int, d_ff: int) -> float:
    return 8 * tokens * d * d + 4 * tokens * tokens * d + 6 * tokens * d * d_ff


def vision_flops(vision: dict) -> float:
    """One image through a CLIP-style tower (`vision_config` dict)."""
    patches = (vision["image_size"] // vision["patch_size"]) ** 2
    n, dv = patches + 1, vision["hidden_size"]
    per_layer = 8 * n * dv * dv + 4 * n * n * dv + 4 * n * dv * vision["intermediate_size"]
    return vision["num_hidden_layers"] * per_layer + 2 * patches * 3 * vision["patch_size"] ** 2 * dv


def projector_flops(n_image_tokens: int, dv: int, d: int) -> float:
    return 2 * n_image_tokens * (dv * d + d * d)


def decoder_flops(seq: int, d: int, d_ff: int, num_layers: int, kept: dict[int, int]) -> float:
    """All decoder layers; `kept`: tokens through each MoD layer (others see all `seq`), plus their routers."""
    total = 0.0
    for layer in range(num_layers):
        if layer in kept:
            total += decoder_layer_flops(kept[layer], d, d_ff) + 4 * seq * d
        else:
            total += decoder_layer_flops(seq, d, d_ff)
    return total


def head_flops(positions: int, d: int, vocab: int) -> float:
    return 2 * positions * d * vocab
