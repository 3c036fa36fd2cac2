"""Run folders: atomic checkpoints, the finished-run marker, and the whole run's loss across resumes.

A checkpoint is written under a staging folder and renamed into place: a process killed mid-save
leaves only a partial staging folder (ignored and cleared next time); the previous `checkpoint-N`
stays complete and is what `resume` picks up. A run is finished once `complete.json` exists (written
last); a finished run folder is never modified unless the user asks to overwrite it.

Each checkpoint also holds `run_loss.json`: the sum of the per-step training losses up to its step,
so a resumed run can report the mean loss of the whole run (the Trainer's own `train_loss` covers
only the steps of its own `train()` call).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

STAGING = ".staging"
COMPLETE = "complete.json"
RUN_LOSS = "run_loss.json"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


@dataclass(frozen=True)
class RunFolder:
    """What an output folder holds before a run starts."""

    path: Path
    finished: bool  # complete.json: a run finished here
    checkpoints: list[Path]  # complete checkpoint-N folders, oldest first

    @classmethod
    def inspect(cls, run_dir: str | os.PathLike) -> "RunFolder":
        root = Path(run_dir)
        return cls(root, (root / COMPLETE).is_file(), complete_checkpoints(root))

    def completed_step(self) -> int | None:
        """The global step recorded in complete.json (None when unreadable)."""
        try:
            return int(json.loads((self.path / COMPLETE).read_text())["global_step"])
        except (OSError, ValueError, KeyError, TypeError):
            return None


def staging_dir(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / STAGING


def publish(staged: Path, run_dir: str | os.PathLike) -> Path:
    """Move a fully written staged checkpoint into `run_dir` with an atomic rename."""
    final = Path(run_dir) / staged.name
    if final.exists():  # same step saved twice (e.g. final save after a periodic one)
        shutil.rmtree(final)
    os.replace(staged, final)
    try:
        staged.parent.rmdir()  # only when empty: a finished run keeps no empty .staging
    except OSError:
        pass
    return final


def clear_staging(run_dir: str | os.PathLike) -> None:
    """Remove what a save killed mid-write left behind (nothing is being saved when this runs)."""
    shutil.rmtree(staging_dir(run_dir), ignore_errors=True)


def clear_run(run_dir: str | os.PathLike) -> None:
    """Make room for a new run (overwrite=true): the finished marker first, so an interrupted clear
    never leaves a folder that looks finished, then the checkpoints and staging leftovers. Weights,
    config and tokenizer files are replaced by the new run's final save."""
    root = Path(run_dir)
    (root / COMPLETE).unlink(missing_ok=True)
    for folder in list(root.iterdir()):
        if _CHECKPOINT.match(folder.name) and folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)
    clear_staging(root)


def write_run_loss(checkpoint_dir: str | os.PathLike, global_step: int, loss_sum: float) -> None:
    (Path(checkpoint_dir) / RUN_LOSS).write_text(json.dumps({"global_step": global_step, "loss_sum": loss_sum}))


def read_run_loss(checkpoint_dir: str | os.PathLike) -> tuple[int, float] | None:
    """(global step, sum of the per-step losses up to it), or None for a checkpoint without the file."""
    try:
        data = json.loads((Path(checkpoint_dir) / RUN_LOSS).read_text())
        return int(data["global_step"]), float(data["loss_sum"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


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
