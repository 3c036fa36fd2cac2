"""`gamma-mod synth`: write the bundled synthetic dataset."""

from __future__ import annotations

import argparse

from .synthetic import write_synthetic_dataset


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/synthetic")
    parser.add_argument("--captions", type=int, default=2000)
    parser.add_argument("--vqa-train", type=int, default=1500, help="training images (3 questions each)")
    parser.add_argument("--vqa-test", type=int, default=200, help="held-out images (3 questions each)")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    data = write_synthetic_dataset(args.out, args.captions, args.vqa_train, args.vqa_test, args.image_size, args.seed)
    print(f"wrote {data.root}: stage1 {data.stage1.name}, stage2 {data.stage2_train.name} / {data.stage2_test.name}, "
          f"tokenizer {data.tokenizer.name}; chance accuracy on the test split {100 * data.chance_accuracy:.1f}%")
    return 0
