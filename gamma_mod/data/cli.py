"""`gamma-mod synth`: write the bundled synthetic dataset (`--video`: the moving-shapes video set)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import UsageError
from .synthetic import write_synthetic_dataset
from .synthetic_video import VIDEO_DATASET_NAMES, write_synthetic_video_dataset

# What write_synthetic_dataset puts in its folder.
SYNTHETIC_NAMES = {"images", "tokenizer", "stage1.json", "stage2_train.json", "stage2_test.json", "synthetic.json"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default=None, help="dataset folder, reused if already complete (default "
                        "runs/synthetic, with --video runs/synthetic_video)")
    parser.add_argument("--captions", type=int, default=2000, help="stage-1 caption images (clips with --video)")
    parser.add_argument("--vqa-train", type=int, default=1500,
                        help="stage-2 training images or clips (3 questions each)")
    parser.add_argument("--vqa-test", type=int, default=200, help="held-out images or clips (3 questions each)")
    parser.add_argument("--image-size", type=int, default=64, help="image / frame side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--video", action="store_true",
                        help="write the moving-shapes video set (frame folders under videos/) instead of images")
    parser.add_argument("--frames", type=int, default=None, help="frames per clip with --video (default 4)")


def check_arguments(args: argparse.Namespace) -> None:
    for flag in ("captions", "vqa_train", "vqa_test"):
        if getattr(args, flag) < 1:
            raise UsageError(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    if args.image_size < 8:
        raise UsageError(f"--image-size must be >= 8 pixels, got {args.image_size}")
    if args.frames is not None and not args.video:
        raise UsageError("--frames applies to the video set only: add --video")
    if args.video:
        args.frames = 4 if args.frames is None else args.frames
        if args.frames < 2:
            raise UsageError(f"--frames must be >= 2 to show motion, got {args.frames}")
        if args.image_size < 24:  # a 3x3 grid of cells: smaller shapes are a few pixels wide
            raise UsageError(f"--image-size must be >= 24 pixels with --video, got {args.image_size}")
    if args.out is None:
        args.out = "runs/synthetic_video" if args.video else "runs/synthetic"
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder")
    # Never write into somebody else's folder (a run folder, a real dataset): only into a new one or
    # one holding nothing but (part of) a synthetic dataset.
    ours = VIDEO_DATASET_NAMES if args.video else SYNTHETIC_NAMES
    foreign = sorted(p.name for p in out.iterdir() if p.name not in ours) if out.is_dir() else []
    if foreign:
        raise UsageError(f"--out {out} holds other files than a synthetic {'video ' if args.video else ''}dataset "
                         f"({', '.join(foreign[:3])}"
                         f"{', ...' if len(foreign) > 3 else ''}): choose a new or empty folder")


def run(args: argparse.Namespace) -> int:
    check_arguments(args)
    if args.video:
        data = write_synthetic_video_dataset(args.out, args.captions, args.vqa_train, args.vqa_test, args.image_size,
                                             args.frames, args.seed)
        media = f"{data.num_frames}-frame clips in {data.videos.name}/"
    else:
        data = write_synthetic_dataset(args.out, args.captions, args.vqa_train, args.vqa_test, args.image_size,
                                       args.seed)
        media = f"tokenizer in {data.tokenizer.name}/"
    counts = {p.name: len(json.loads(p.read_text())) for p in (data.stage1, data.stage2_train, data.stage2_test)}
    listed = ", ".join(f"{name} {n} records" for name, n in counts.items())
    print(f"wrote {data.root}: {listed}; {media}; "
          f"chance accuracy on {data.stage2_test.name} {100 * data.chance_accuracy:.1f}%")
    return 0
