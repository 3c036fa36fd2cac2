"""The image-blind baseline of the quickstart: how much a model learns from the questions alone.

A question type a text-only model answers from priors shows nothing about vision, so the quickstart
reports what the SAME recipe reaches without pictures. Of the two candidates:
  - the trained dense model asked with a blank image: measures whether that model looks at the
    image, but a blank picture is out of its training distribution, so its score can fall BELOW
    what priors allow and flatter the dense row;
  - the same SFT recipe on the same records with the image removed (stage-1 init, the dense
    baseline's total SFT epochs, same optimiser and batch), asked the same held-out questions
    without the image: the best a model of this size learns from question priors with this budget.
we report the second (`blind_*` below). Records keep their question and answer text; only the
`image` field and the `<image>` tag go, so the prompt is the text-only LLaVA layout (no image tokens).
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

from .questions import IMAGE_TAG, Question

logger = logging.getLogger(__name__)


def strip_image(text: str) -> str:
    """The question text without its `<image>` tag (and the newline that follows it)."""
    return text.replace(f"{IMAGE_TAG}\n", "").replace(IMAGE_TAG, "").strip()


def blind_records(records: list[dict]) -> list[dict]:
    """Records with the image removed: no `image` field, no `<image>` tag in any turn."""
    out = []
    for record in records:
        if not isinstance(record, dict) or "conversations" not in record:
            raise ValueError(f"record {record.get('id') if isinstance(record, dict) else record!r}: "
                             "not a LLaVA conversation record")
        blind = {k: v for k, v in record.items() if k != "image"}
        blind["conversations"] = [{**turn, "value": strip_image(turn["value"])} if turn.get("from") == "human"
                                  else dict(turn) for turn in record["conversations"]]
        out.append(blind)
    return out


def write_blind_split(src: Path, dst: Path) -> Path:
    """`src` (LLaVA JSON) with every image removed, written to `dst` (rewritten only when `src` changed)."""
    records = json.loads(Path(src).read_text())
    text = json.dumps(blind_records(records))
    if not dst.is_file() or dst.read_text() != text:
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_text(text)
    return dst


def blind_questions(questions: list[Question]) -> list[Question]:
    """The held-out questions without their images (same ids, so the benchmark's scorer reads them)."""
    return [replace(q, text=strip_image(q.text), image=None) for q in questions]


__all__ = ["strip_image", "blind_records", "write_blind_split", "blind_questions"]
