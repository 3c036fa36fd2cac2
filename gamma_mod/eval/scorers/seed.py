"""SEED-Bench: exact-match accuracy per question type, and the leaderboard upload file.

Reproduces haotian-liu/LLaVA scripts/convert_seed_for_submission.py (scripts/v1_5/eval/seed.sh):

    answers keyed by their raw "question_id"; for every question of SEED-Bench.json of the data type:
        key = int(question_id) when it parses, else question_id
        right = answer text == question["answer"]     (exact: "B." or " B" is wrong for "B")
        unanswered -> counted, wrong
    accuracy = right / questions, per question type and overall (LLaVA-1.5 reports data type "image")
    upload file: one {"question_id", "prediction": answer text} line per question, annotation order

`lenient=True` (opt-in, never the default) parses free-form answers with the shared option-letter
parser ("B.", "(C) cat", "The answer is A", the text of one option).

Deviations: the official upload writer crashes on an unanswered question; we write the answered ones
and report the rest as `upload_missing` (the leaderboard expects every question, video ones included).
The official accuracy crashes (KeyError) when a question type has neither a right nor an unanswered
question; we report 0.0 for it.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..questions import Question, read_answers, read_llava_questions
from .options import parse_option_letter

logger = logging.getLogger(__name__)

QUESTIONS = "llava-seed-bench.jsonl"
ANNOTATION = "SEED-Bench.json"
UPLOAD = "seed_bench_upload.jsonl"
LETTERS = "ABCD"


@dataclass(frozen=True)
class SeedOptions:
    lenient: bool = False  # opt-in: parse "B." / "(C) cat" / "The answer is A" instead of exact match
    data_type: str = "image"  # "image" (LLaVA-1.5's SEED-Bench-IMG), "video" or "all"

    def __post_init__(self):
        if self.data_type not in ("image", "video", "all"):
            raise ValueError(f"seed_bench data_type must be image, video or all, got {self.data_type!r}")


def read_questions(data_dir: str | Path) -> list[Question]:
    """LLaVA's question file, keeping only image questions (video ones have a frame folder path)."""
    root = Path(data_dir)
    annotation = root / ANNOTATION
    image_ids = None
    if annotation.exists():
        image_ids = {str(q["question_id"]) for q in json.loads(annotation.read_text())["questions"]
                     if q.get("data_type", "image") == "image"}
    return [q for q in read_llava_questions(root / QUESTIONS, root)
            if image_ids is None or str(q.question_id) in image_ids]


def _lookup_key(question_id: Any) -> Any:
    # The official script looks answers up by int(question_id) first: an answer file with string
    # ids matches nothing (LLaVA's question file, and so our answer lines, carry ints).
    try:
        return int(question_id)
    except (TypeError, ValueError):
        return question_id


def _answers(answers_jsonl: str | Path) -> dict[Any, dict[str, Any]]:
    return {r["question_id"]: r for r in read_answers(answers_jsonl)}


def score(answers_jsonl: str | Path, annotation: str | Path, options: SeedOptions = SeedOptions()) -> dict[str, float]:
    data = json.loads(Path(annotation).read_text())
    type_names = {v: k for k, v in data["question_type"].items()}
    answers = _answers(answers_jsonl)
    per_type: dict[str, list[bool]] = defaultdict(list)
    missing = 0
    matched = set()
    for q in data["questions"]:
        if options.data_type != "all" and q["data_type"] != options.data_type:
            continue
        key = _lookup_key(q["question_id"])
        row = answers.get(key)
        missing += row is None
        if row is None:
            pred = None
        elif options.lenient:
            matched.add(key)
            choices = {k: q.get(f"choice_{k.lower()}", "") for k in LETTERS}
            pred = parse_option_letter(row["text"], LETTERS, choices)
        else:
            matched.add(key)
            pred = row["text"]
        per_type[type_names[q["question_type_id"]]].append(pred == q["answer"])
    if missing:
        logger.warning("seed_bench: %d %s questions unanswered, counted wrong", missing, options.data_type)
    flat = [c for v in per_type.values() for c in v]
    metrics = {"accuracy": sum(flat) / max(1, len(flat)), "total": len(flat), "missing": missing,
               "unscored_answers": len(answers) - len(matched)}
    metrics.update({f"accuracy/{k}": sum(v) / len(v) for k, v in sorted(per_type.items())})
    return metrics


def write_upload(answers_jsonl: str | Path, annotation: str | Path, out_jsonl: str | Path) -> tuple[Path, int]:
    """The leaderboard file the official converter writes; returns (path, questions left out)."""
    data = json.loads(Path(annotation).read_text())
    answers = _answers(answers_jsonl)
    lines, missing = [], 0
    for q in data["questions"]:
        # The converter tries the id as written, then as an int.
        row = answers.get(q["question_id"]) or answers.get(_lookup_key(q["question_id"]))
        if row is None:
            missing += 1
            continue
        lines.append(json.dumps({"question_id": q["question_id"], "prediction": row["text"]}) + "\n")
    out = Path(out_jsonl)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(lines))
    if missing:
        logger.warning("seed_bench: upload file %s lacks %d unanswered questions (the leaderboard wants all)",
                       out, missing)
    return out, missing


def evaluate(answers_jsonl: Path, data_dir: Path, out_dir: Path, options: SeedOptions = SeedOptions()
             ) -> dict[str, Any]:
    annotation = Path(data_dir) / ANNOTATION
    metrics: dict[str, Any] = score(answers_jsonl, annotation, options)
    upload, missing = write_upload(answers_jsonl, annotation, Path(out_dir) / UPLOAD)
    metrics.update({"upload": str(upload), "upload_missing": missing})
    return metrics
