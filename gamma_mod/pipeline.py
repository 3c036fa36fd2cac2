"""The whole gamma-MoD pipeline on the embedded default (`gamma-mod pipeline`, README command 1).

    synthetic data -> stage 1 (projector) -> ARank -> select + convert -> stage-2 SFT (MoD and a
    dense baseline, same data and steps) -> held-out VQA accuracy + prefill speed -> one table

Every step writes into `--out` (default runs/quickstart) and is skipped when its output is already
complete there, so an interrupted run continues where it stopped (`--fresh` starts over).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

logger = logging.getLogger("gamma_mod.pipeline")


@dataclass
class PipelineReport:
    name: str
    accuracy: float
    prefill_samples_per_s: float
    skipped_fraction: float  # of routable tokens, mean over MoD layers
    mod_layers: list[int]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/quickstart", help="run folder (resumable)")
    parser.add_argument("--strategy", default="gamma", choices=["gamma", "pmod"])
    parser.add_argument("--routing-ratio", type=float, default=0.5, help="fraction of routable tokens skipped")
    parser.add_argument("--k-dense", type=int, default=2,
                        help="layers with the highest ARank kept dense (paper: 4 of 32; first/last are dense anyway)")
    parser.add_argument("--model", default="tiny", help="model spec under configs/model/")
    parser.add_argument("--stage1-config", default="stage1_tiny")
    parser.add_argument("--stage2-config", default="stage2_tiny")
    parser.add_argument("--arank-samples", type=int, default=32)
    parser.add_argument("--eval-samples", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fresh", action="store_true", help="delete --out first")


def _done(folder: Path) -> bool:
    return (folder / "config.json").exists() and any(folder.glob("*.safetensors"))


def step(title: str):
    logger.info("==== %s ====", title)
    return time.perf_counter()


def run(args: argparse.Namespace) -> int:
    from .data.synthetic import write_synthetic_dataset

    out = Path(args.out)
    if args.fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    timings: dict[str, float] = {}

    t = step("1/6 synthetic data")
    data = write_synthetic_dataset(out / "data", seed=args.seed)
    timings["data"] = time.perf_counter() - t

    t = step("2/6 stage 1: projector alignment (LLM and vision tower frozen)")
    stage1 = out / "stage1"
    if not _done(stage1):
        train_stage(args.stage1_config, stage1, data, stage="pretrain", model=args.model, seed=args.seed)
    timings["stage1"] = time.perf_counter() - t

    if args.strategy == "gamma":
        t = step("3/6 ARank of the stage-1 model and layer selection")
        mod_layers = arank_and_select(stage1, data, out / "arank.json", args.arank_samples, args.k_dense)
        timings["arank"] = time.perf_counter() - t
    else:
        step("3/6 p-MoD: progressive ratio decay picks the layers (no ARank pass)")
        mod_layers = None

    t = step(f"4/6 convert to MoD ({args.strategy}, skip ratio {args.routing_ratio})")
    converted = out / f"converted_{args.strategy}"
    if not _done(converted):
        convert_folder(stage1, converted, mod_layers, args.routing_ratio, args.strategy)
    timings["convert"] = time.perf_counter() - t

    t = step("5/6 stage 2: SFT of the MoD model and of the dense baseline")
    stage2_mod = out / f"stage2_{args.strategy}"
    stage2_dense = out / "stage2_dense"
    if not _done(stage2_mod):
        train_stage(args.stage2_config, stage2_mod, data, stage="finetune", init=converted, seed=args.seed)
    if not _done(stage2_dense):
        train_stage(args.stage2_config, stage2_dense, data, stage="finetune", init=stage1, seed=args.seed)
    timings["stage2"] = time.perf_counter() - t

    t = step("6/6 evaluation: held-out synthetic VQA accuracy and prefill speed")
    rows = evaluate_pair(stage2_dense, stage2_mod, data, out, args.eval_samples, args.strategy)
    timings["eval"] = time.perf_counter() - t

    table = format_report(rows, data.chance_accuracy)
    print(table)
    (out / "report.md").write_text(table + "\n")
    (out / "report.json").write_text(json.dumps(
        {"rows": [asdict(r) for r in rows], "chance_accuracy": data.chance_accuracy, "timings_s": timings}, indent=2))
    logger.info("pipeline done in %.0f s (%s); report in %s", sum(timings.values()),
                ", ".join(f"{k} {v:.0f}s" for k, v in timings.items()), out / "report.md")
    return 0


def format_report(rows: list[PipelineReport], chance: float) -> str:
    dense = rows[0]
    lines = [
        f"| model | held-out VQA accuracy | prefill samples/s | prefill speed-up | skipped tokens (of routable) | MoD layers |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.name} | {100 * r.accuracy:.1f}% | {r.prefill_samples_per_s:.1f} | "
            f"{r.prefill_samples_per_s / dense.prefill_samples_per_s:.2f}x | {100 * r.skipped_fraction:.1f}% | "
            f"{r.mod_layers or '-'} |"
        )
    lines.append(f"\nchance level (majority answer per question type): {100 * chance:.1f}%")
    return "\n".join(lines)
