"""`gamma-mod synth`: write the bundled synthetic dataset."""

from __future__ import annotations

import argparse
import json

from .synthetic import write_synthetic_dataset


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/synthetic", help="dataset folder (reused if already complete)")
    parser.add_argument("--captions", type=int, default=2000, help="stage-1 caption images")
    parser.add_argument("--vqa-train", type=int, default=1500, help="stage-2 training images (3 questions each)")
    parser.add_argument("--vqa-test", type=int, default=200, help="held-out images (3 questions each)")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    data = write_synthetic_dataset(args.out, args.captions, args.vqa_train, args.vqa_test, args.image_size, args.seed)
    counts = {p.name: len(json.loads(p.read_text())) for p in (data.stage1, data.stage2_train, data.stage2_test)}
    listed = ", ".join(f"{name} {n} records" for name, n in counts.items())
    print(f"wrote {data.root}: {listed}; tokenizer in {data.tokenizer.name}/; "
          f"chance accuracy on {data.stage2_test.name} {100 * data.chance_accuracy:.1f}%")
    return 0
