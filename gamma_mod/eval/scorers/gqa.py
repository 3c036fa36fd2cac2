"""GQA testdev-balanced: exact match, as LLaVA-1.5's conversion + GQA's official eval.py.

Reproduces haotian-liu/LLaVA scripts/convert_gqa_for_eval.py followed by the GQA v1.2 eval.py
(`eval.py --tier testdev_balanced`, run by scripts/v1_5/eval/gqa.sh):

    prediction = answer text .rstrip(".").lower()          (the conversion; nothing else)
    right      = prediction == question["answer"]          (eval.py; no VQA normalisation)
    accuracy over the balanced questions; "binary" = structural type != "query", "open" = "query";
    per structural and per semantic type

so "the table", "yes!", "dark-blue", "a man" and "two" are wrong for "table", "yes", "dark blue",
"man" and "2". The predictions file `[{"questionId", "prediction"}]` keeps each question id exactly
as the answer file has it (an int stays an int), as the conversion script writes it.

Deviations: eval.py refuses a predictions file that misses a balanced question; we count it wrong
and report `missing` (the number equals eval.py's whenever eval.py gives one). Answers are joined to
questions by `str(question_id)` (eval.py: the raw value, which LLaVA's question file writes as a
string). A question without "isBalanced" counts as balanced (the testdev_balanced file has it on all).
Validity, plausibility, consistency and distribution need files absent from testdev and are not computed.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from pathlib import Path

from ..questions import Question, read_answers, read_llava_questions, write_json

logger = logging.getLogger(__name__)

QUESTIONS = "llava_gqa_testdev_balanced.jsonl"
IMAGES = "data/images"
ANNOTATION = "data/testdev_balanced_questions.json"
PREDICTIONS = "testdev_balanced_predictions.json"


def convert_prediction(text: str) -> str:
    """convert_gqa_for_eval.py's only processing."""
    return text.rstrip(".").lower()


def read_questions(data_dir: str | Path) -> list[Question]:
    root = Path(data_dir)
    return read_llava_questions(root / QUESTIONS, root / IMAGES)


def score(answers_jsonl: str | Path, annotation: str | Path) -> dict[str, float]:
    truth = json.loads(Path(annotation).read_text())
    predictions = {str(r["question_id"]): convert_prediction(r["text"]) for r in read_answers(answers_jsonl)}
    groups: dict[str, list[bool]] = defaultdict(list)
    missing = 0
    for qid, question in truth.items():
        if not question.get("isBalanced", True):
            continue
        if "answer" not in question:
            raise ValueError(f"{annotation}: question {qid!r} has no 'answer'")
        predicted = predictions.get(qid)
        missing += predicted is None
        correct = predicted == question["answer"]
        groups["accuracy"].append(correct)
        types = question.get("types", {})
        if types.get("structural"):
            groups["accuracy/open" if types["structural"] == "query" else "accuracy/binary"].append(correct)
            groups[f"accuracy/structural/{types['structural']}"].append(correct)
        if types.get("semantic"):
            groups[f"accuracy/semantic/{types['semantic']}"].append(correct)
    if missing:
        logger.warning("gqa: %d balanced questions unanswered, counted wrong (the official eval.py refuses "
                       "such a file)", missing)
    metrics = {k: sum(v) / len(v) for k, v in sorted(groups.items())}
    metrics.setdefault("accuracy", 0.0)
    metrics.update({"total": len(groups["accuracy"]), "missing": missing})
    return metrics


def write_predictions(answers_jsonl: str | Path, out_json: str | Path) -> Path:
    rows = [{"questionId": r["question_id"], "prediction": convert_prediction(r["text"])}
            for r in read_answers(answers_jsonl)]
    return write_json(out_json, rows)


def evaluate(answers_jsonl: Path, data_dir: Path, out_dir: Path, options: None = None) -> dict[str, float]:
    write_predictions(answers_jsonl, Path(out_dir) / PREDICTIONS)
    return score(answers_jsonl, Path(data_dir) / ANNOTATION)
