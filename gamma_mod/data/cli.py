"""`gamma-mod synth`: write the bundled synthetic dataset."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import UsageError
from .synthetic import write_synthetic_dataset

# What write_synthetic_dataset puts in its folder.
SYNTHETIC_NAMES = {"images", "tokenizer", "stage1.json", "stage2_train.json", "stage2_test.json", "synthetic.json"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/synthetic", help="dataset folder (reused if already complete)")
    parser.add_argument("--captions", type=int, default=2000, help="stage-1 caption images")
    parser.add_argument("--vqa-train", type=int, default=1500, help="stage-2 training images (3 questions each)")
    parser.add_argument("--vqa-test", type=int, default=200, help="held-out images (3 questions each)")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)


def check_arguments(args: argparse.Namespace) -> None:
    for flag in ("captions", "vqa_train", "vqa_test"):
        if getattr(args, flag) < 1:
            raise UsageError(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    if args.image_size < 8:
        raise UsageError(f"--image-size must be >= 8 pixels, got {args.image_size}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder")
    # Never write into somebody else's folder (a run folder, a real dataset): only into a new one or
    # one holding nothing but (part of) a synthetic dataset.
    foreign = sorted(p.name for p in out.iterdir() if p.name not in SYNTHETIC_NAMES) if out.is_dir() else []
    if foreign:
        raise UsageError(f"--out {out} holds other files than a synthetic dataset ({', '.join(foreign[:3])}"
                         f"{', ...' if len(foreign) > 3 else ''}): choose a new or empty folder")


def run(args: argparse.Namespace) -> int:
    check_arguments(args)
    data = write_synthetic_dataset(args.out, args.captions, args.vqa_train, args.vqa_test, args.image_size, args.seed)
    counts = {p.name: len(json.loads(p.read_text())) for p in (data.stage1, data.stage2_train, data.stage2_test)}
    listed = ", ".join(f"{name} {n} records" for name, n in counts.items())
    print(f"wrote {data.root}: {listed}; tokenizer in {data.tokenizer.name}/; "
          f"chance accuracy on {data.stage2_test.name} {100 * data.chance_accuracy:.1f}%")
    return 0
