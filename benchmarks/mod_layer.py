"""Time one MoD decoder layer against its dense twin, in one run, and print the ratios.

    python benchmarks/mod_layer.py [--configs tiny mid] [--ratios 0.34 0.5] [--repeats 5]

Every token is routable here (the image-token-dominated regime of LLaVA prompts), so a MoD layer
processes int(T * (1 - ratio)) tokens. The FLOP-ideal ratio uses the paper's per-layer count
8*T*d^2 + 4*T^2*d + 6*T*d*d_ff (plus the router's 4*T*d), so "measured / ideal" close to 1 means
the routing machinery (top-k, gather/scatter, masks) costs little.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import dataclass

import torch
from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding

from clock import add_clock_arguments, apply_clock_arguments, clock_note, describe_machine
from gamma_mod.model.configuration import LlavaLlamaConfig
from gamma_mod.mod.config import ModConfig
from gamma_mod.mod.layer import MoDDecoderLayer, ModForwardContext
from gamma_mod.mod.strategies import build_strategy


@dataclass
class Shape:
    name: str
    hidden: int
    ffn: int
    heads: int
    seq: int
    batch: int = 1


SHAPES = {
    "tiny": Shape("tiny", 256, 688, 4, 128, batch=4),
    "mid": Shape("mid", 1024, 2816, 16, 1024),
    "mid2k": Shape("mid2k", 1024, 2816, 16, 2048),
}


def layer_flops(tokens: int, d: int, d_ff: int, router: bool = False) -> float:
    return 8 * tokens * d * d + 4 * tokens * tokens * d + 6 * tokens * d * d_ff + (4 * tokens * d if router else 0)


def paired_median(fn_a, fn_b, repeats: int, warmup: int = 2, clock=time.perf_counter) -> tuple[float, float]:
    """Median times of two functions measured ALTERNATELY, so drifting machine load hits both alike."""
    for _ in range(warmup):
        fn_a()
        fn_b()
    times_a, times_b = [], []
    for _ in range(repeats):
        for fn, times in ((fn_a, times_a), (fn_b, times_b)):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            start = clock()
            fn()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times.append(clock() - start)
    return statistics.median(times_a), statistics.median(times_b)


def build_layers(shape: Shape, ratio: float, device, dtype, attn_implementation: str = "sdpa"):
    config = LlavaLlamaConfig(hidden_size=shape.hidden, intermediate_size=shape.ffn, num_attention_heads=shape.heads,
                              num_key_value_heads=shape.heads, num_hidden_layers=2, vocab_size=32)
    config._attn_implementation = attn_implementation  # both layers use the same attention kernel
    mod = ModConfig(mod_layers_idx=[1], skip_ratio=ratio, router_weighting="prob")
    strategy = build_strategy(mod)
    torch.manual_seed(0)
    dense = LlamaDecoderLayer(config, 1)
    routed = MoDDecoderLayer(config, 1, mod, strategy, strategy.build_router(shape.hidden))
    routed.load_state_dict(dense.state_dict(), strict=False)
    rotary = LlamaRotaryEmbedding(config)
    return dense.to(device, dtype), routed.to(device, dtype), rotary.to(device)


def measure(shape: Shape, ratio: float, repeats: int, device, dtype, backward: bool = True,
            clock=time.perf_counter) -> dict:
    """One MoD layer vs its dense twin at one skip ratio: times and ratios (fwd+bwd only if `backward`)."""
    x = torch.randn(shape.batch, shape.seq, shape.hidden, device=device, dtype=dtype)
    positions = torch.arange(shape.seq, device=device).unsqueeze(0)
    dense, routed, rotary = build_layers(shape, ratio, device, dtype)
    cos_sin = rotary(x, positions)
    routable = torch.ones(shape.batch, shape.seq, dtype=torch.bool, device=device)

    def dense_fwd(inputs=x):
        return dense(inputs, position_embeddings=cos_sin)

    def mod_fwd(inputs=x):
        return routed(inputs, position_embeddings=cos_sin, mod_context=ModForwardContext(routable=routable))

    def with_backward(forward):
        def step():
            forward(x.detach().requires_grad_(True)).float().pow(2).mean().backward()
        return step

    with torch.no_grad():
        t_dense_f, t_mod_f = paired_median(dense_fwd, mod_fwd, repeats, clock=clock)
    t_dense_fb = t_mod_fb = float("nan")
    if backward:
        t_dense_fb, t_mod_fb = paired_median(with_backward(dense_fwd), with_backward(mod_fwd), repeats, clock=clock)
    kept = shape.seq - int(shape.seq * ratio)
    ideal = layer_flops(kept, shape.hidden, shape.ffn, router=True) / layer_flops(shape.seq, shape.hidden, shape.ffn)
    return dict(shape=shape.name, seq=shape.seq, ratio=ratio, ideal=ideal,
                fwd=t_mod_f / t_dense_f, fwd_bwd=t_mod_fb / t_dense_fb,
                dense_fwd_ms=1e3 * t_dense_f, dense_fwd_bwd_ms=1e3 * t_dense_fb)


def run(shape: Shape, ratios: list[float], repeats: int, device, dtype, clock=time.perf_counter) -> list[dict]:
    return [measure(shape, ratio, repeats, device, dtype, clock=clock) for ratio in ratios]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["tiny", "mid"], choices=sorted(SHAPES))
    parser.add_argument("--ratios", nargs="+", type=float, default=[0.34, 0.5])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    add_clock_arguments(parser)
    args = parser.parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    clock = apply_clock_arguments(args, device)
    print(f"# MoD layer vs dense layer, {describe_machine(device)}, {args.dtype}, torch {torch.__version__}, "
          f"{clock_note(args)}, median of {args.repeats}")
    print("| shape | seq | skip ratio | FLOP-ideal MoD/dense | measured fwd | measured fwd+bwd | fwd / ideal | fwd+bwd / ideal | dense fwd ms | dense fwd+bwd ms |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for cfg in args.configs:
        for r in run(SHAPES[cfg], args.ratios, args.repeats, device, dtype, clock):
            print(f"| {r['shape']} | {r['seq']} | {r['ratio']:.2f} | {r['ideal']:.3f} | {r['fwd']:.3f} | {r['fwd_bwd']:.3f} "
                  f"| {r['fwd'] / r['ideal']:.2f} | {r['fwd_bwd'] / r['ideal']:.2f} | {r['dense_fwd_ms']:.1f} "
                  f"| {r['dense_fwd_bwd_ms']:.1f} |")
    if device.type == "cpu" and hasattr(os, "getloadavg"):
        print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
