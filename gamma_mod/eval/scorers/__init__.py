"""One scorer module per benchmark, and the registry the eval CLI dispatches on.

Every module has `read_questions(data_dir) -> list[Question]` (its official question file, in
LLaVA-v1.5's `playground/data/eval/<benchmark>` layout) and `evaluate(answers_jsonl, data_dir, out_dir,
options) -> dict`: metrics for benchmarks with public answers, `{"submission": path}` for those scored
by a server (VQAv2, VizWiz, MM-Vet). Each also exposes its scorer or writer with explicit file
arguments (`score(...)`, `write_submission(...)`) for use outside that layout. Each module's docstring
names the official script it reproduces and every deliberate deviation.

A benchmark with scoring choices (e.g. lenient option parsing, always opt-in) declares them as a frozen
dataclass; `Benchmark.parse_options(["key=value", ...])` builds it, rejecting unknown keys.
Accuracies, precision, recall, F1 and ratios are fractions in [0, 1]; MME scores are its points,
CIDEr is the COCO value (not ×100).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..questions import Question
from . import (
    coco_caption,
    gqa,
    mathvista,
    mmbench,
    mme,
    mmmu,
    mmvet,
    okvqa,
    pope,
    scienceqa,
    seed,
    synthetic,
    textvqa,
    vizwiz,
    vqav2,
)

_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


@dataclass(frozen=True)
class Benchmark:
    name: str
    read_questions: Callable[[Path], list[Question]]
    evaluate: Callable[..., dict[str, Any]]
    submission_only: bool = False  # answers are scored by the benchmark's server, not here
    max_new_tokens: int = 128  # LLaVA model_vqa_loader default; short-answer prompts stop at EOS long before
    options: type | None = None  # the scorer's frozen options dataclass, if it has choices

    def parse_options(self, pairs: Iterable[str] = ()) -> Any:
        """`["lenient=true", ...]` -> the options dataclass (None for a benchmark without options)."""
        pairs = list(pairs)
        if self.options is None:
            if pairs:
                raise ValueError(f"benchmark {self.name!r} has no scoring options (got {pairs})")
            return None
        fields = {f.name: f for f in dataclasses.fields(self.options)}
        values: dict[str, Any] = {}
        for pair in pairs:
            key, sep, raw = pair.partition("=")
            key = key.strip().replace("-", "_")
            if not sep or key not in fields:
                raise ValueError(f"benchmark {self.name!r}: bad scoring option {pair!r}; expected KEY=VALUE with "
                                 f"KEY in {sorted(fields)}")
            values[key] = _convert(self.name, key, raw.strip(), fields[key])
        return self.options(**values)

    def run(self, answers_jsonl: Path, data_dir: Path, out_dir: Path, options: Any = None) -> dict[str, Any]:
        if self.options is None:
            return self.evaluate(answers_jsonl, data_dir, out_dir)
        return self.evaluate(answers_jsonl, data_dir, out_dir, options if options is not None else self.options())


def _convert(benchmark: str, key: str, raw: str, field: dataclasses.Field) -> Any:
    kind = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", str(field.type))
    if kind == "bool":
        if raw.lower() not in _TRUE + _FALSE:
            raise ValueError(f"benchmark {benchmark!r}: option {key} wants true/false, got {raw!r}")
        return raw.lower() in _TRUE
    if kind == "int":
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"benchmark {benchmark!r}: option {key} wants an integer, got {raw!r}") from None
    return raw


def _entry(name: str, module, **kwargs) -> Benchmark:
    return Benchmark(name=name, read_questions=module.read_questions, evaluate=module.evaluate, **kwargs)


SCORERS: dict[str, Benchmark] = {
    "gqa": _entry("gqa", gqa),
    "scienceqa": _entry("scienceqa", scienceqa, options=scienceqa.ScienceQAOptions),
    "textvqa": _entry("textvqa", textvqa),
    "pope": _entry("pope", pope),
    "mme": _entry("mme", mme),
    "mmbench": _entry("mmbench", mmbench, options=mmbench.MMBenchOptions),
    "seed_bench": _entry("seed_bench", seed, options=seed.SeedOptions),
    "vqav2": _entry("vqav2", vqav2, submission_only=True),
    "vizwiz": _entry("vizwiz", vizwiz, submission_only=True),
    "mm-vet": _entry("mm-vet", mmvet, submission_only=True, max_new_tokens=512),
    "mmmu": _entry("mmmu", mmmu, options=mmmu.MMMUOptions),
    "mathvista": _entry("mathvista", mathvista, options=mathvista.MathVistaOptions, max_new_tokens=1024),
    "okvqa": _entry("okvqa", okvqa),
    "coco_caption": _entry("coco_caption", coco_caption),
    "synthetic": _entry("synthetic", synthetic, max_new_tokens=8),
}


def get_benchmark(name: str) -> Benchmark:
    try:
        return SCORERS[name]
    except KeyError:
        raise ValueError(f"unknown benchmark {name!r}; known: {sorted(SCORERS)}") from None


__all__ = ["SCORERS", "Benchmark", "get_benchmark"]
