"""Expected errors, and the one rule every command-line entry reports them by.

An expected error is the user's input being wrong, not a bug: a bad flag, config key or value, a
missing model folder, an unusable data file, record or image. Each class has a stable exit code:

    2  UsageError        a bad flag or argument value
    2  ConfigError       a config file, key or value (a model folder that is not one included)
    1  DataError         a data file, record, image or answer file that cannot be used

`report_errors` is the rule: an expected error prints ONE line on stderr, `PROG: error: MESSAGE`,
and returns its exit code; the traceback comes only with `--debug` or `GAMMA_MOD_DEBUG=1`.
Anything else is a bug and propagates with its traceback.

`ConfigError` and `DataError` are also importable from where they were first defined
(`gamma_mod.config`, `gamma_mod.data.formats`).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

DEBUG_ENV = "GAMMA_MOD_DEBUG"


class UsageError(ValueError):
    """A command-line flag or argument that cannot be used."""

    exit_code = 2


class ConfigError(ValueError):
    """A config file, key or value that cannot be used."""

    exit_code = 2


class ModelFolderError(ConfigError):
    """A path given as a model folder that is not one (see gamma_mod.model.folder)."""


class DataError(ValueError):
    """A record (or data file) that cannot be used.

    `reason` is a short category ("missing image", "too long", ...) that skip mode counts by;
    `str()` names the file and the record id when they are known, so the message alone locates it.
    """

    exit_code = 1

    def __init__(self, message: str, reason: str = "invalid record", *, record_id: str | None = None,
                 source: str | Path | None = None) -> None:
        self.message = message
        self.reason = reason
        self.record_id = record_id
        self.source = str(source) if source is not None else None
        super().__init__(str(self))

    def __str__(self) -> str:
        where = [self.source] if self.source else []
        if self.record_id is not None:
            where.append(f"record {self.record_id}")
        return ": ".join(where + [self.message])

    def located(self, source: str | Path | None = None, record_id: str | None = None) -> "DataError":
        """The same error with the file / record filled in where it was not known yet."""
        return DataError(self.message, self.reason, record_id=self.record_id if self.record_id is not None else record_id,
                         source=self.source if self.source is not None else source)


EXPECTED_ERRORS = (UsageError, ConfigError, DataError)


class ArgumentParser(argparse.ArgumentParser):
    """argparse that raises UsageError (one line, exit 2) instead of printing its usage block and exiting."""

    def error(self, message: str):
        raise UsageError(f"{message} (see {self.prog} --help)")


def debug_enabled(argv: list[str] | None = None) -> bool:
    """`--debug` anywhere on the command line, or GAMMA_MOD_DEBUG set to anything but "" / "0"."""
    return "--debug" in (argv or []) or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def one_line(error: BaseException) -> str:
    """The message on one line: a multi-line message (a list of problems) is joined with "; "."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return "; ".join(lines) or type(error).__name__


def report_errors(prog: str, command: Callable[[], int | None], debug: bool = False) -> int:
    """Run `command` under the error rule; returns its exit code (0 when it returns None)."""
    try:
        return int(command() or 0)
    except EXPECTED_ERRORS as error:
        if debug:
            traceback.print_exc()
        print(f"{prog}: error: {one_line(error)}", file=sys.stderr, flush=True)
        return error.exit_code
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print(f"{prog}: interrupted", file=sys.stderr, flush=True)
        return 130
