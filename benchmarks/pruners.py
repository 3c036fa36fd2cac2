"""Accuracy vs TFLOPs of dense, gamma-MoD, p-MoD, FastV and PDrop on the embedded default, over seeds.

    python benchmarks/pruners.py --runs runs/seed0 runs/seed1 runs/seed2 --out benchmarks

Each run folder is a finished quickstart (`gamma-mod pipeline --seed N --out runs/seedN`, then the same
with `--strategy pmod`). Per run, `gamma-mod compare` measures every method on the same held-out
questions and prefill prompts in one run (FastV/PDrop on the run's dense baseline `stage2_dense`,
the model that received the same training as the MoD ones); the table and plot show the mean over
runs, accuracy and prefill speed with their standard deviation. Per-run outputs go to <run>/compare.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from gamma_mod.eval.compare import add_arguments as compare_arguments
from gamma_mod.eval.compare import aggregate, run_compare, write_outputs

# FastV's K=2 with R 0.5 / 0.75; PDrop at the paper's 8/16/24 of 32 layers scaled to 6 -> 2, 3, 4.
FASTV = ["K=2,R=0.5", "K=2,R=0.75"]
PDROP = ["layers=2,3,4,lambda=0.5", "layers=2,3,4,lambda=0.7"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", required=True, help="finished quickstart folders, one per seed")
    parser.add_argument("--out", default="benchmarks", help="folder for pruners_tiny.{md,json,png}")
    parser.add_argument("--fastv", action="append", default=None)
    parser.add_argument("--pdrop", action="append", default=None)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    results = []
    for run in map(Path, args.runs):
        compare = argparse.ArgumentParser()
        compare_arguments(compare)
        argv = ["--base", str(run / "stage2_dense"), "--data", str(run / "data"), "--out", str(run / "compare"),
                "--repeats", str(args.repeats)]
        argv += [x for kind in ("gamma", "pmod") if (run / f"stage2_{kind}" / "complete.json").exists()
                 for x in (f"--{'mod' if kind == 'gamma' else 'pmod'}", str(run / f"stage2_{kind}"))]
        argv += [x for s in (args.fastv or FASTV) for x in ("--fastv", s)]
        argv += [x for s in (args.pdrop or PDROP) for x in ("--pdrop", s)]
        if args.limit:
            argv += ["--limit", str(args.limit)]
        results.append(run_compare(compare.parse_args(argv)))
    means, spread = aggregate(results)
    write_outputs(means, Path(args.out) / "pruners_tiny", title=f"tiny default, mean over {len(results)} seeds",
                  settings={"runs": args.runs, "fastv": args.fastv or FASTV, "pdrop": args.pdrop or PDROP},
                  spread=spread)


if __name__ == "__main__":
    main()
