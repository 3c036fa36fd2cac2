"""Where a MoD layer's time goes: torch.profiler over one MoD layer and its dense twin.

    python benchmarks/profile_mod_layer.py [--config mid] [--ratio 0.5] [--steps 5] [--out FILE.md]

One markdown table per model and pass (forward; forward+backward): the operators with the most self
time per step, their calls per step and their share of the step. The routing machinery (router,
sort, index building, row copies, masks) is what the MoD table has and the dense table has not; its
share is what keeps a MoD layer above its FLOP ideal. Same layers and inputs as
benchmarks/mod_layer.py (every token routable).
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from clock import describe_machine  # noqa: E402
from mod_layer import SHAPES, build_layers  # noqa: E402

from gamma_mod.mod.layer import ModForwardContext  # noqa: E402


def profile_table(fn, steps: int, rows: int, device) -> tuple[str, float]:
    """Markdown table of the top `rows` operators by self time per step, and the step's total self time (ms)."""
    for _ in range(2):
        fn()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
    cuda = device.type == "cuda"
    events = [e for e in prof.key_averages() if e.key.startswith("aten::") or cuda]
    def self_us(e):
        return e.self_device_time_total if cuda else e.self_cpu_time_total
    events.sort(key=self_us, reverse=True)
    total = sum(self_us(e) for e in events) / steps / 1e3
    lines = ["| operator | calls / step | self ms / step | share |", "|---|---|---|---|"]
    for e in events[:rows]:
        ms = self_us(e) / steps / 1e3
        lines.append(f"| {e.key} | {e.count / steps:g} | {ms:.2f} | {100 * ms / total:.1f}% |")
    lines.append(f"| **all operators** | | **{total:.2f}** | 100% |")
    return "\n".join(lines), total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="mid", choices=sorted(SHAPES))
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rows", type=int, default=18)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", help="also write the tables to this markdown file")
    parser.add_argument("--threads", type=int, help="CPU threads (default: torch's, i.e. every core)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    shape = SHAPES[args.config]
    dense, routed, rotary = build_layers(shape, args.ratio, device, torch.float32)
    x = torch.randn(shape.batch, shape.seq, shape.hidden, device=device)
    cos_sin = rotary(x, torch.arange(shape.seq, device=device).unsqueeze(0))
    routable = torch.ones(shape.batch, shape.seq, dtype=torch.bool, device=device)
    forwards = {
        "dense": lambda inputs: dense(inputs, position_embeddings=cos_sin),
        "MoD": lambda inputs: routed(inputs, position_embeddings=cos_sin, mod_context=ModForwardContext(routable=routable)),
    }
    out = [f"# MoD layer profile: {shape.name} (batch {shape.batch}, seq {shape.seq}, hidden {shape.hidden}, ffn "
           f"{shape.ffn}), skip {args.ratio}, {describe_machine(device)}, float32, torch {torch.__version__}",
           f"`python benchmarks/profile_mod_layer.py --config {args.config} --ratio {args.ratio} --steps {args.steps}`"]
    totals = {}
    for name, forward in forwards.items():
        def fwd(forward=forward):
            with torch.no_grad():
                forward(x)

        def fwd_bwd(forward=forward):
            forward(x.detach().requires_grad_(True)).pow(2).mean().backward()

        for pass_name, fn in (("forward", fwd), ("forward+backward", fwd_bwd)):
            table, total = profile_table(fn, args.steps, args.rows, device)
            totals[(name, pass_name)] = total
            out += [f"\n## {name}, {pass_name}\n", table]
    out.append("\nSelf-time totals under the profiler, MoD / dense: " + ", ".join(
        f"{p} {totals[('MoD', p)] / totals[('dense', p)]:.3f}" for p in ("forward", "forward+backward")))
    text = "\n".join(out)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
