"""Benchmark questions and answer files, without torch: scorers import this, not the answer loop.

A `Question` is what the generic loop answers; each benchmark's reader turns its official question
file into them. Answer files are JSONL, one `{"question_id", "prompt", "text", **extra}` per line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

IMAGE_TAG = "<image>"


@dataclass
class Question:
    question_id: str | int
    text: str  # the user turn, "<image>\n" first when there is an image (LLaVA's convention)
    image: str | None = None  # path of the image file
    # Copied into the answer line (scorers read e.g. "category" back); keys starting with "_" are
    # private to the encode function (MMBench's base64 image) and never written.
    extra: dict[str, Any] = field(default_factory=dict)


def with_image_tag(text: str, has_image: bool) -> str:
    """LLaVA's model_vqa_loader / model_vqa: `<image>\\n` + the question file's text, verbatim
    (no stripping: its whitespace reaches the tokenizer as the official scripts pass it)."""
    return f"{IMAGE_TAG}\n{text}" if has_image else text


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def read_answers(path: str | Path) -> list[dict[str, Any]]:
    """The loop's answer lines; a line cut by a kill mid-write is ignored (that question is unanswered)."""
    out = []
    for line in Path(path).read_text().splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and "question_id" in row and "text" in row:
            out.append(row)
    return out


def read_llava_questions(path: str | Path, image_folder: str | Path, extra_keys: tuple[str, ...] = ("category",)
                         ) -> list[Question]:
    """LLaVA-v1.5's eval question JSONL (`{"question_id", "image", "text", "category"?}`) -> Questions."""
    questions = []
    for row in read_jsonl(path):
        image = row.get("image")
        questions.append(Question(
            question_id=row["question_id"],
            text=with_image_tag(row["text"], bool(image)),
            image=str(Path(image_folder) / image) if image else None,
            extra={k: row[k] for k in extra_keys if k in row} | ({"image": image} if image else {}),
        ))
    return questions


def write_json(path: str | Path, data: Any) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path
