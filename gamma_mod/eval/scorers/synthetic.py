"""The bundled synthetic VQA split: single-word answers, exact match after normalisation."""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..answer import Question


def normalize(text: str) -> str:
    words = re.sub(r"[^\w\s]", " ", text.lower()).split()
    return words[0] if words else ""


def read_questions(annotation: str | Path, image_folder: str | Path) -> list[Question]:
    records = json.loads(Path(annotation).read_text())
    return [Question(question_id=r["id"], text=r["conversations"][0]["value"], image=str(Path(image_folder) / r["image"]),
                     extra={"answer": r["conversations"][1]["value"]}) for r in records]


def score(answers_jsonl: str | Path, annotation: str | Path) -> dict[str, float]:
    truth = {r["id"]: r["conversations"][1]["value"] for r in json.loads(Path(annotation).read_text())}
    lines = [json.loads(line) for line in Path(answers_jsonl).read_text().splitlines() if line.strip()]
    per_type: dict[str, list[bool]] = {}
    for line in lines:
        qid = line["question_id"]
        correct = normalize(line["text"]) == normalize(truth[qid])
        per_type.setdefault(qid.rsplit("-", 1)[-1], []).append(correct)
    flat = [c for v in per_type.values() for c in v]
    metrics = {"accuracy": sum(flat) / max(1, len(flat)), "answered": len(flat), "total": len(truth)}
    metrics.update({f"accuracy/{k}": sum(v) / len(v) for k, v in sorted(per_type.items())})
    return metrics
