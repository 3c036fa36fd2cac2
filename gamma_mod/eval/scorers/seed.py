"""SEED-Bench, image questions: option-letter accuracy per question type and overall.

Annotation: `SEED-Bench.json`, `{"questions": [{"question_id", "answer": "A".."D", "question_type_id",
"data_type": "image"|"video", "choice_a".."choice_d"}], "question_type": {name: id}}`. As in
LLaVA's convert_seed_for_submission, the denominator is every image question of the annotation:
an unanswered question counts as wrong.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from ..questions import Question, read_answers, read_llava_questions
from .options import parse_option_letter

QUESTIONS = "llava-seed-bench.jsonl"
ANNOTATION = "SEED-Bench.json"
LETTERS = "ABCD"


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


def score(answers_jsonl: str | Path, annotation: str | Path, data_type: str = "image") -> dict[str, float]:
    data = json.loads(Path(annotation).read_text())
    type_names = {v: k for k, v in data["question_type"].items()}
    answers = {str(r["question_id"]): r["text"] for r in read_answers(answers_jsonl)}
    per_type: dict[str, list[bool]] = defaultdict(list)
    missing = 0
    for q in data["questions"]:
        if q.get("data_type", "image") != data_type:
            continue
        text = answers.get(str(q["question_id"]))
        missing += text is None
        choices = {k: q.get(f"choice_{k.lower()}", "") for k in LETTERS}
        pred = parse_option_letter(text, LETTERS, choices) if text is not None else None
        per_type[type_names[q["question_type_id"]]].append(pred == q["answer"])
    flat = [c for v in per_type.values() for c in v]
    metrics = {"accuracy": sum(flat) / max(1, len(flat)), "total": len(flat), "missing": missing}
    metrics.update({f"accuracy/{k}": sum(v) / len(v) for k, v in sorted(per_type.items())})
    return metrics


def evaluate(answers_jsonl: Path, data_dir: Path, out_dir: Path) -> dict[str, float]:
    return score(answers_jsonl, Path(data_dir) / ANNOTATION)
