"""The bundled synthetic VQA held-out split: single-word answers, exact match ignoring case and
punctuation. The annotation is the split itself (`stage2_test.json`, LLaVA conversation format,
ids "test-{image}-{question type}"). The video set (`gamma-mod synth --video`) has the same layout with
`"video": "videos/<clip>"` (relative to the dataset folder) instead of `"image"`, and is scored the same way."""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..questions import Question, read_answers

QUESTIONS = "stage2_test.json"
IMAGES = "images"


def normalize(text: str) -> str:
    # Whole answer, not its first word: "red blue" must not pass for "red".
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def read_questions(annotation: str | Path, image_folder: str | Path | None = None) -> list[Question]:
    """`annotation` is the split file, or the dataset folder holding it (then images/ beside it)."""
    annotation = Path(annotation)
    if annotation.is_dir():
        image_folder = image_folder or annotation / IMAGES
        annotation = annotation / QUESTIONS
    image_folder = Path(image_folder) if image_folder is not None else annotation.parent / IMAGES
    records = json.loads(annotation.read_text())
    # Question has no video field: a clip's frame folder travels in `extra` for a video-aware loop.
    return [Question(question_id=r["id"], text=r["conversations"][0]["value"],
                     image=str(image_folder / r["image"]) if "image" in r else None,
                     extra={"answer": r["conversations"][1]["value"],
                            **({"video": str(annotation.parent / r["video"])} if "video" in r else {})})
            for r in records]


def score(answers_jsonl: str | Path, annotation: str | Path) -> dict[str, float]:
    annotation = Path(annotation)
    if annotation.is_dir():
        annotation = annotation / QUESTIONS
    truth = {r["id"]: r["conversations"][1]["value"] for r in json.loads(annotation.read_text())}
    per_type: dict[str, list[bool]] = {}
    for line in read_answers(answers_jsonl):
        qid = str(line["question_id"])
        correct = normalize(line["text"]) == normalize(truth[qid])
        per_type.setdefault(qid.rsplit("-", 1)[-1], []).append(correct)
    flat = [c for v in per_type.values() for c in v]
    metrics = {"accuracy": sum(flat) / max(1, len(flat)), "answered": len(flat), "total": len(truth)}
    metrics.update({f"accuracy/{k}": sum(v) / len(v) for k, v in sorted(per_type.items())})
    return metrics


def evaluate(answers_jsonl: Path, data_dir: Path, out_dir: Path) -> dict[str, float]:
    return score(answers_jsonl, data_dir)
