"""POPE (COCO): accuracy, precision, recall, F1 and yes-ratio per category (adversarial, popular, random).

Reproduces haotian-liu/LLaVA llava/eval/eval_pope.py (scripts/v1_5/eval/pope.sh):

    for each category file coco/coco_pope_{category}.json (one {"label": yes|no, ...} per line):
        answers = the answer lines of that category, in answer-file order; the category comes from the
                  question file (llava_pope_test.jsonl) by question id
        parse: first sentence only (text before the first "."), commas dropped, split on " ":
               "No" / "no" / "not" among the words -> no, else yes
        pair answers and labels BY POSITION (zip: the shorter list decides the count)
        yes_ratio = yes answers / answers; accuracy, precision, recall, F1 on the pairs

Answer files need no "image" key (LLaVA's model_vqa_loader writes none): the category is the answer
line's "category" (our loop copies it from the question) or, failing that, the question file's.

Deviations: the official script divides by zero when a category has no predicted or no true "yes";
we report 0.0. `f1_mean` (mean F1 over the categories present) is ours.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..questions import Question, read_answers, read_jsonl, read_llava_questions

logger = logging.getLogger(__name__)

QUESTIONS = "llava_pope_test.jsonl"
IMAGES = "val2014"
ANNOTATION_DIR = "coco"
CATEGORIES = ("adversarial", "popular", "random")


def parse_yes_no(text: str) -> str:
    first = text.split(".")[0] if "." in text else text
    words = first.replace(",", "").split(" ")
    return "no" if ("No" in words or "not" in words or "no" in words) else "yes"


def binary_metrics(preds: list[str], labels: list[str]) -> dict[str, float]:
    pairs = list(zip(preds, labels))
    tp = sum(p == "yes" and y == "yes" for p, y in pairs)
    fp = sum(p == "yes" and y == "no" for p, y in pairs)
    tn = sum(p == "no" and y == "no" for p, y in pairs)
    fn = sum(p == "no" and y == "yes" for p, y in pairs)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"accuracy": (tp + tn) / max(1, tp + tn + fp + fn), "precision": precision, "recall": recall,
            "f1": f1, "yes_ratio": preds.count("yes") / max(1, len(preds)), "total": len(pairs)}


def read_questions(data_dir: str | Path) -> list[Question]:
    root = Path(data_dir)
    return read_llava_questions(root / QUESTIONS, root / IMAGES)


def _categories(rows: list[dict[str, Any]], question_file: str | Path | None) -> list[str]:
    by_id = None
    out = []
    for row in rows:
        category = row.get("category")
        if category is None:
            if by_id is None:
                if question_file is None or not Path(question_file).exists():
                    raise ValueError(f"POPE answer {row['question_id']!r} has no 'category' and no question file "
                                     f"({question_file}) to look it up in")
                by_id = {str(q["question_id"]): q.get("category") for q in read_jsonl(question_file)}
            category = by_id.get(str(row["question_id"]))
            if category is None:
                raise ValueError(f"{question_file}: no category for question {row['question_id']!r}")
        out.append(category)
    return out


def score(answers_jsonl: str | Path, annotation_dir: str | Path, question_file: str | Path | None = None,
          categories: tuple[str, ...] = CATEGORIES) -> dict[str, float]:
    rows = read_answers(answers_jsonl)
    row_categories = _categories(rows, question_file)
    metrics: dict[str, float] = {}
    f1s = []
    for category in categories:
        path = Path(annotation_dir) / f"coco_pope_{category}.json"
        if not path.exists():
            continue
        preds = [parse_yes_no(r["text"]) for r, c in zip(rows, row_categories) if c == category]
        if not preds:
            continue
        # Official: "no" is negative, any other label positive.
        labels = ["no" if label["label"] == "no" else "yes" for label in read_jsonl(path)]
        if len(preds) != len(labels):
            logger.warning("pope/%s: %d answers for %d labels; pairing by position covers the first %d "
                           "(as the official script)", category, len(preds), len(labels), min(len(preds), len(labels)))
        result = binary_metrics(preds, labels)
        f1s.append(result["f1"])
        metrics.update({f"{category}/{k}": v for k, v in result.items()})
    metrics["f1_mean"] = sum(f1s) / len(f1s) if f1s else 0.0
    return metrics


def evaluate(answers_jsonl: Path, data_dir: Path, out_dir: Path, options: None = None) -> dict[str, float]:
    root = Path(data_dir)
    return score(answers_jsonl, root / ANNOTATION_DIR, root / QUESTIONS)
