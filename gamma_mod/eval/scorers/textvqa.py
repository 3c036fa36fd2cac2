"""TextVQA val: the official VQA accuracy.

Per question, each of the 10 human answers is left out in turn; against the other 9 the prediction
scores min(#matching / 3, 1); the score is the mean over the 10 subsets. Predictions and human
answers go through the shared VQA normalisation first (as the m4c evaluator LLaVA uses does).
Annotation: `TextVQA_0.5.1_val.json`, `{"data": [{"question_id", "answers": [10 str], ...}]}`.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..questions import Question, read_answers, read_llava_questions
from .vqa_normalize import normalize_answer

QUESTIONS = "llava_textvqa_val_v051_ocr.jsonl"
IMAGES = "train_images"
ANNOTATION = "TextVQA_0.5.1_val.json"


def vqa_accuracy(prediction: str, human_answers: list[str]) -> float:
    pred = normalize_answer(prediction)
    humans = [normalize_answer(a) for a in human_answers]
    scores = []
    for left_out in range(len(humans)):
        matching = sum(1 for i, a in enumerate(humans) if i != left_out and a == pred)
        scores.append(min(1.0, matching / 3))
    return sum(scores) / len(scores)


def read_questions(data_dir: str | Path) -> list[Question]:
    root = Path(data_dir)
    return read_llava_questions(root / QUESTIONS, root / IMAGES)


def score(answers_jsonl: str | Path, annotation: str | Path) -> dict[str, float]:
    truth = {str(q["question_id"]): q["answers"] for q in json.loads(Path(annotation).read_text())["data"]}
    scores = [vqa_accuracy(r["text"], truth[str(r["question_id"])]) for r in read_answers(answers_jsonl)]
    return {"accuracy": sum(scores) / max(1, len(scores)), "answered": len(scores), "total": len(truth)}


def evaluate(answers_jsonl: Path, data_dir: Path, out_dir: Path) -> dict[str, float]:
    return score(answers_jsonl, Path(data_dir) / ANNOTATION)
