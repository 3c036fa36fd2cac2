"""`gamma-mod` command line: one sub-command per job, each defined next to the code it drives.

A sub-command module exposes `add_arguments(parser)` and `run(args) -> int | None`; it is imported
only when its command runs, so a missing optional extra never breaks the other commands.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("gamma_mod.data.cli", "write the bundled synthetic dataset (images + LLaVA-format JSON)"),
    "train": ("gamma_mod.train.cli", "stage-1 / stage-2 training (HF Trainer, optional DeepSpeed)"),
    "arank": ("gamma_mod.arank.cli", "per-layer ARank of a model's attention maps"),
    "convert": ("gamma_mod.mod.cli", "turn low-ARank layers of a model into MoD layers"),
    "eval": ("gamma_mod.eval.cli", "answer and score a benchmark"),
    "speed": ("gamma_mod.eval.speed", "dense vs MoD efficiency report"),
    "skipmap": ("gamma_mod.eval.skipmap", "draw which image patches each MoD layer skipped"),
    "compare": ("gamma_mod.eval.compare", "accuracy vs TFLOPs: dense, MoD and token pruners (FastV, PDrop)"),
    "pipeline": ("gamma_mod.pipeline", "the whole gamma-MoD pipeline on the embedded default"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="gamma-mod", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        parser.print_help()
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    name, rest = argv[0], argv[1:]
    module = importlib.import_module(COMMANDS[name][0])
    command_parser = argparse.ArgumentParser(prog=f"gamma-mod {name}", description=COMMANDS[name][1])
    module.add_arguments(command_parser)
    args = command_parser.parse_args(rest)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return int(module.run(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
