"""`gamma-mod pipeline --seeds N` (or `--seeds 0,1,2`): the whole pipeline once per seed, one table.

Each seed is a complete, independent run (its own synthetic data draw, initialisation and data order)
in --out/seed_<s>, resumable like a one-seed run; the table is the mean ± sample standard deviation
per row (gamma_mod/eval/quickstart_table.py), written to --out/report_<strategy>_seeds.md and .json
with every seed's own rows.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
from collections.abc import Callable
from pathlib import Path

from .errors import UsageError

logger = logging.getLogger("gamma_mod.pipeline")


def parse_seeds(text: str, base: int = 0) -> list[int]:
    """"N" -> base .. base+N-1; "a,b,c" -> those seeds (distinct, in order)."""
    text = str(text).strip()
    try:
        parts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UsageError(f"--seeds takes a count N or a comma list of integer seeds, got {text!r}") from None
    if not parts:
        raise UsageError(f"--seeds {text!r} names no seed")
    if "," in text:
        seeds = parts
    else:
        if parts[0] < 1:
            raise UsageError(f"--seeds N must be >= 1, got {parts[0]}")
        seeds = list(range(base, base + parts[0]))
    if len(set(seeds)) != len(seeds):
        raise UsageError(f"--seeds {text!r} repeats a seed")
    return seeds


def run_seeds(args: argparse.Namespace, seeds: list[int], run_one: Callable[[argparse.Namespace], int]) -> int:
    from .eval.quickstart_table import aggregate, format_table

    out = Path(args.out)
    if args.fresh and out.exists():
        import shutil

        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    runs, chances, timings = [], [], {}
    for seed in seeds:
        one = copy.copy(args)
        one.seeds, one.seed, one.out, one.fresh = None, seed, str(out / f"seed_{seed}"), False
        logger.info("######## seed %d of %s ########", seed, seeds)
        code = run_one(one)
        if code:
            return code
        report = json.loads((Path(one.out) / f"report_{args.strategy}.json").read_text())
        runs.append(report["metrics"])
        chances.append(report["chance_accuracy"])
        timings[seed] = report["timings_s"]
    means, spreads = aggregate(runs)
    chance = sum(chances) / len(chances)
    table = format_table(means, chance, spreads, seeds)
    print(table)
    (out / f"report_{args.strategy}_seeds.md").write_text(table + "\n")
    (out / f"report_{args.strategy}_seeds.json").write_text(json.dumps(
        {"seeds": seeds, "mean": means, "spread": spreads, "per_seed": dict(zip(map(str, seeds), runs)),
         "chance_accuracy": chances, "timings_s": timings}, indent=2))
    return 0


__all__ = ["parse_seeds", "run_seeds"]
