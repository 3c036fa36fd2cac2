"""GQA testdev-balanced: exact match after the shared VQA normalisation.

Annotation: `testdev_balanced_questions.json`, `{question_id: {"answer", "types": {"structural",
"semantic", ...}, ...}}`. Also writes the official eval.py input `[{"questionId", "prediction"}]`
(LLaVA's convert_gqa_for_eval: lower-cased, trailing period stripped).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from ..questions import Question, read_answers, read_llava_questions, write_json
from .vqa_normalize import normalize_answer

QUESTIONS = "llava_gqa_testdev_balanced.jsonl"
IMAGES = "data/images"
ANNOTATION = "data/testdev_balanced_questions.json"


def read_questions(data_dir: str | Path) -> list[Question]:
    root = Path(data_dir)
    return read_llava_questions(root / QUESTIONS, root / IMAGES)


def score(answers_jsonl: str | Path, annotation: str | Path) -> dict[str, float]:
    truth = json.loads(Path(annotation).read_text())
    by_type: dict[str, list[bool]] = defaultdict(list)
    flat: list[bool] = []
    for row in read_answers(answers_jsonl):
        gold = truth[str(row["question_id"])]
        correct = normalize_answer(row["text"]) == normalize_answer(gold["answer"])
        flat.append(correct)
        for kind in ("structural", "semantic"):
            if gold.get("types", {}).get(kind):
                by_type[f"{kind}/{gold['types'][kind]}"].append(correct)
    metrics = {"accuracy": sum(flat) / max(1, len(flat)), "answered": len(flat), "total": len(truth)}
    metrics.update({f"accuracy/{k}": sum(v) / len(v) for k, v in sorted(by_type.items())})
    return metrics


def write_predictions(answers_jsonl: str | Path, out_json: str | Path) -> Path:
    rows = [{"questionId": str(r["question_id"]), "prediction": r["text"].rstrip(".").lower()}
            for r in read_answers(answers_jsonl)]
    return write_json(out_json, rows)


def evaluate(answers_jsonl: Path, data_dir: Path, out_dir: Path) -> dict[str, float]:
    write_predictions(answers_jsonl, Path(out_dir) / "testdev_balanced_predictions.json")
    return score(answers_jsonl, Path(data_dir) / ANNOTATION)
