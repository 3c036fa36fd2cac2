"""One scorer module per benchmark, and the registry the eval CLI dispatches on.

Every module has `read_questions(data_dir) -> list[Question]` (its official question file, in
LLaVA-v1.5's `playground/data/eval/<benchmark>` layout) and `evaluate(answers_jsonl, data_dir,
out_dir) -> dict`: metrics for benchmarks with public answers, `{"submission": path}` for those
scored by a server (VQAv2, VizWiz, MM-Vet). Each also exposes its scorer or writer with explicit
file arguments (`score(...)`, `write_submission(...)`) for use outside that layout.
Accuracies, precision, recall, F1 and ratios are fractions in [0, 1]; MME scores are its points.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..questions import Question
from . import gqa, mmbench, mme, mmvet, pope, scienceqa, seed, synthetic, textvqa, vizwiz, vqav2


@dataclass(frozen=True)
class Benchmark:
    name: str
    read_questions: Callable[[Path], list[Question]]
    evaluate: Callable[[Path, Path, Path], dict[str, Any]]
    submission_only: bool = False  # answers are scored by the benchmark's server, not here
    max_new_tokens: int = 128  # LLaVA model_vqa_loader default; short-answer prompts stop at EOS long before


def _entry(name: str, module, **kwargs) -> Benchmark:
    return Benchmark(name=name, read_questions=module.read_questions, evaluate=module.evaluate, **kwargs)


SCORERS: dict[str, Benchmark] = {
    "gqa": _entry("gqa", gqa),
    "scienceqa": _entry("scienceqa", scienceqa),
    "textvqa": _entry("textvqa", textvqa),
    "pope": _entry("pope", pope),
    "mme": _entry("mme", mme),
    "mmbench": _entry("mmbench", mmbench),
    "seed_bench": _entry("seed_bench", seed),
    "vqav2": _entry("vqav2", vqav2, submission_only=True),
    "vizwiz": _entry("vizwiz", vizwiz, submission_only=True),
    "mm-vet": _entry("mm-vet", mmvet, submission_only=True, max_new_tokens=512),
    "synthetic": _entry("synthetic", synthetic, max_new_tokens=8),
}


def get_benchmark(name: str) -> Benchmark:
    try:
        return SCORERS[name]
    except KeyError:
        raise ValueError(f"unknown benchmark {name!r}; known: {sorted(SCORERS)}") from None


__all__ = ["SCORERS", "Benchmark", "get_benchmark"]
