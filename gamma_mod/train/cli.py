"""`gamma-mod train CONFIG.yaml key=value ...` (see gamma_mod/train/train.py)."""

from __future__ import annotations

import argparse

from .train import main


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="a built-in recipe name (stage1_tiny, ...) or a YAML path")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. optim.lr=1e-4 output_dir=runs/x")


def run(args: argparse.Namespace) -> int:
    return main([args.config, *args.overrides])
