"""OK-VQA val: the VQA accuracy of the VQA evaluator, as LLaVA-HR's eval_okvqa.py runs it.

Reproduces luogen1996/LLaVA-HR llava_hr/eval/eval_okvqa.py with its vqa.py / vqa_eval.py (VQA, VQAEval:
the salesforce/LAVIS copy of the GT-Vision-Lab VQA evaluator; the same files ship in Yaxin9Luo/Gamma-MOD),
run by scripts/v1_5/eval_full/okvqa.sh on mscoco_val2014_annotations.json and
OpenEnded_mscoco_val2014_questions.json (OK-VQA's):

    every annotated question (the evaluator refuses a result file that misses one)
    prediction: newlines/tabs -> " ", strip, punctuation step, digit/article step (VQAEval: no
        lower-casing before the punctuation step, commas kept for its digit-comma-digit test)
    human answers: the punctuation step only, and only when the 10 answers are not all identical
    each human answer is left out in turn -- "left out" is every answer dict EQUAL to it, as the
        official `item != gtAnsDatum` -- and the prediction scores min(#equal answers among the rest / 3, 1)
    accuracy = mean over questions, per answer type and per question type

Deviations: unanswered questions are counted wrong and reported as `missing` (the official loader
asserts instead: the number equals whenever it gives one); answer and annotation ids are joined by
`str()`; we report fractions, the official prints 100× rounded to 2 decimals.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from pathlib import Path

from ..questions import Question, read_answers, read_llava_questions, with_image_tag
from .vqa_normalize import normalize_vqaeval_human, normalize_vqaeval_prediction

logger = logging.getLogger(__name__)

QUESTIONS = "okvqa_val.jsonl"
OFFICIAL_QUESTIONS = "OpenEnded_mscoco_val2014_questions.json"
ANNOTATION = "mscoco_val2014_annotations.json"
IMAGES = "val2014"  # LLaVA-HR reads ../coco-cap/val2014: link it here
PROMPT_SUFFIX = "Answer the question using a single word or phrase."


def read_questions(data_dir: str | Path) -> list[Question]:
    """LLaVA-HR's okvqa_val.jsonl; without it, OK-VQA's own question file with LLaVA's short-answer prompt."""
    root = Path(data_dir)
    if (root / QUESTIONS).exists():
        return read_llava_questions(root / QUESTIONS, root / IMAGES)
    records = json.loads((root / OFFICIAL_QUESTIONS).read_text())["questions"]
    return [Question(question_id=q["question_id"], text=with_image_tag(f"{q['question']}\n{PROMPT_SUFFIX}", True),
                     image=str(root / IMAGES / f"COCO_val2014_{int(q['image_id']):012d}.jpg"),
                     extra={"image": f"COCO_val2014_{int(q['image_id']):012d}.jpg"})
            for q in records]


def vqa_accuracy(prediction: str, human_answers: list[dict]) -> float:
    """VQAEval.evaluate for one question; `human_answers` are the annotation's answer dicts."""
    pred = normalize_vqaeval_prediction(prediction)
    humans = [dict(a) for a in human_answers]  # the official normalises them in place: work on a copy
    if len({a["answer"] for a in humans}) > 1:
        for a in humans:
            a["answer"] = normalize_vqaeval_human(a["answer"])
    scores = []
    for held_out in humans:
        matching = sum(1 for other in humans if other != held_out and other["answer"] == pred)
        scores.append(min(1.0, matching / 3))
    return sum(scores) / len(scores)


def score(answers_jsonl: str | Path, annotation: str | Path) -> dict[str, float]:
    annotations = json.loads(Path(annotation).read_text())["annotations"]
    known = {str(a["question_id"]) for a in annotations}
    answers = {str(r["question_id"]): r["text"] for r in read_answers(answers_jsonl)}
    unknown = [qid for qid in answers if qid not in known]
    if unknown:
        raise ValueError(f"{answers_jsonl}: {len(unknown)} answers to questions not in {annotation} "
                         f"(first: {unknown[:5]})")
    groups: dict[str, list[float]] = defaultdict(list)
    missing = 0
    for ann in annotations:
        text = answers.get(str(ann["question_id"]))
        missing += text is None
        acc = vqa_accuracy(text, ann["answers"]) if text is not None else 0.0
        groups["accuracy"].append(acc)
        groups[f"accuracy/answer_type/{ann.get('answer_type')}"].append(acc)
        groups[f"accuracy/question_type/{ann.get('question_type')}"].append(acc)
    if missing:
        logger.warning("okvqa: %d of %d questions unanswered, counted wrong (the official loader refuses such "
                       "a file)", missing, len(annotations))
    metrics = {k: sum(v) / len(v) for k, v in sorted(groups.items())}
    metrics.setdefault("accuracy", 0.0)
    metrics.update({"total": len(annotations), "missing": missing})
    return metrics


def evaluate(answers_jsonl: Path, data_dir: Path, out_dir: Path, options: None = None) -> dict[str, float]:
    return score(answers_jsonl, Path(data_dir) / ANNOTATION)
