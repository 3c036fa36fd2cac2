"""Atomic checkpoints: a checkpoint is written under a staging folder and renamed into place.

A process killed mid-save leaves only a partial staging folder (ignored and cleared next time); the
previous `checkpoint-N` stays complete and is what `resume` picks up.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

STAGING = ".staging"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def staging_dir(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / STAGING


def publish(staged: Path, run_dir: str | os.PathLike) -> Path:
    """Move a fully written staged checkpoint into `run_dir` with an atomic rename."""
    final = Path(run_dir) / staged.name
    if final.exists():  # same step saved twice (e.g. final save after a periodic one)
        shutil.rmtree(final)
    os.replace(staged, final)
    return final


def complete_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """checkpoint-N folders with a trainer state, oldest first."""
    root = Path(run_dir)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _CHECKPOINT.match(child.name)
        if match and child.is_dir() and (child / "trainer_state.json").exists():
            found.append((int(match.group(1)), child))
    return [path for _, path in sorted(found)]


def last_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    done = complete_checkpoints(run_dir)
    return done[-1] if done else None


def rotate(run_dir: str | os.PathLike, keep: int) -> None:
    if keep <= 0:
        return
    for old in complete_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
