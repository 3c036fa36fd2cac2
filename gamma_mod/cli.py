"""`gamma-mod` command line: one sub-command per job, each defined next to the code it drives.

A sub-command module exposes `add_arguments(parser)` and `run(args) -> int | None`; it is imported
only when its command runs, so a missing optional extra never breaks the other commands.

Errors follow one rule, applied here for every sub-command (gamma_mod.errors): an expected error
(bad flag, config, model folder, data) is one line on stderr with exit code 2 (usage/config) or 1
(data); `--debug` or GAMMA_MOD_DEBUG=1 adds its traceback. Any other error keeps its traceback.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import sys

from .errors import ArgumentParser, UsageError, debug_enabled, report_errors

COMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("gamma_mod.data.cli", "write the bundled synthetic dataset (images, or --video clips, + LLaVA-format JSON)"),
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
    debug = debug_enabled(argv)
    if argv[:1] == ["--debug"]:
        argv = argv[1:]
    prog = f"gamma-mod {argv[0]}" if argv and argv[0] in COMMANDS else "gamma-mod"
    return report_errors(prog, lambda: _dispatch(argv), debug)


def _dispatch(argv: list[str]) -> int:
    parser = ArgumentParser(prog="gamma-mod", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"gamma-mod {_version()}")
    parser.add_argument("--debug", action="store_true", help="print the traceback of expected errors too")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    if argv and argv[0] == "--version":
        parser.parse_args(argv[:1])  # prints the version and exits
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0
    if argv[0] not in COMMANDS:
        raise UsageError(f"unknown command {argv[0]!r} (commands: {', '.join(COMMANDS)}; see gamma-mod --help)")
    name, rest = argv[0], argv[1:]
    module = importlib.import_module(COMMANDS[name][0])
    command_parser = ArgumentParser(prog=f"gamma-mod {name}", description=COMMANDS[name][1])
    module.add_arguments(command_parser)
    command_parser.add_argument("--debug", action="store_true",
                                help="on an expected error, print its traceback too (or set GAMMA_MOD_DEBUG=1)")
    args = command_parser.parse_args(rest)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return int(module.run(args) or 0)


def _version() -> str:
    # The installed distribution's metadata; a bare source tree (no install) falls back to the package.
    try:
        return importlib.metadata.version("gamma-mod")
    except importlib.metadata.PackageNotFoundError:
        from . import __version__

        return __version__


if __name__ == "__main__":
    raise SystemExit(main())
