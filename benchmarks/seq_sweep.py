"""How the MoD saving grows with the number of (image) tokens: MoD/dense time of one decoder layer vs
sequence length, against the FLOP ideal, plotted to a PNG.

    python benchmarks/seq_sweep.py [--seqs 128 256 512 1024 2048 4096] [--ratios 0.34 0.5] [--out benchmarks/seq_sweep.png]

The layer is benchmarks/mod_layer.py's "mid" layer (hidden 1024, ffn 2816, 16 heads; batch 1, every
token routable), dense and MoD timed alternately at each point. At short sequences the routing's fixed
costs (router, sort, row copies) are a larger share of a small layer; as T grows the attention's T^2
term grows too, and the MoD layer, attending among only the kept tokens, saves (1 - keep^2) of it.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from clock import add_clock_arguments, apply_clock_arguments, clock_note, describe_machine  # noqa: E402
from mod_layer import SHAPES, Shape, measure  # noqa: E402


def plot(rows: list[dict], ratios: list[float], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    colours = dict(zip(ratios, ["tab:blue", "tab:orange", "tab:green", "tab:red"]))
    for ax, key, name in ((axes[0], "fwd", "forward"), (axes[1], "fwd_bwd", "forward + backward")):
        for ratio in ratios:
            points = [r for r in rows if r["ratio"] == ratio]
            seqs = [r["seq"] for r in points]
            ax.plot(seqs, [r["ideal"] for r in points], "--", color=colours[ratio], label=f"FLOP ideal, skip {ratio}")
            ax.plot(seqs, [r[key] for r in points], "o-", color=colours[ratio], label=f"measured, skip {ratio}")
        ax.set_xscale("log", base=2)
        ax.set_xticks(seqs, [str(s) for s in seqs])
        ax.set_xlabel("sequence length (tokens, all routable)")
        ax.set_title(name)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("MoD / dense layer time")
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seqs", nargs="+", type=int, default=[128, 256, 512, 1024, 2048, 4096])
    parser.add_argument("--ratios", nargs="+", type=float, default=[0.34, 0.5])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "seq_sweep.png"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    add_clock_arguments(parser)
    args = parser.parse_args()
    device = torch.device(args.device)
    clock = apply_clock_arguments(args, device)
    base = SHAPES["mid"]
    rows = []
    print(f"# MoD/dense layer time vs sequence length, hidden {base.hidden}, ffn {base.ffn}, batch 1, "
          f"{describe_machine(device)}, float32, torch {torch.__version__}, {clock_note(args)}")
    print("| seq | skip | FLOP ideal | fwd | fwd / ideal | fwd+bwd | fwd+bwd / ideal | dense fwd ms |")
    print("|---|---|---|---|---|---|---|---|")
    for seq in args.seqs:
        shape = Shape(f"mid{seq}", base.hidden, base.ffn, base.heads, seq)
        for ratio in args.ratios:
            r = measure(shape, ratio, args.repeats, device, torch.float32, clock=clock)
            rows.append(r)
            print(f"| {seq} | {ratio:.2f} | {r['ideal']:.3f} | {r['fwd']:.3f} | {r['fwd'] / r['ideal']:.2f} "
                  f"| {r['fwd_bwd']:.3f} | {r['fwd_bwd'] / r['ideal']:.2f} | {r['dense_fwd_ms']:.1f} |", flush=True)
    title = (f"MoD layer / dense layer time (hidden {base.hidden}, ffn {base.ffn}), "
             f"{describe_machine(device)}, {clock_note(args)}, median of {args.repeats} alternating runs")
    plot(rows, args.ratios, args.out, title)
    print(f"plot: {args.out}")
    if device.type == "cpu" and hasattr(os, "getloadavg"):
        print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
