"""LLaVA conversation JSON: `[{id, image?, conversations: [{from: human|gpt, value}]}]`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

IMAGE_TAG = "<image>"


class DataError(ValueError):
    """A record that cannot be used; the message names the file and the record id."""

    def __init__(self, message: str, reason: str = "invalid record") -> None:
        super().__init__(message)
        self.reason = reason


def read_records(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: no such data file", "missing file") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e})", "bad json") from None
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of records, got {type(data).__name__}", "bad json")
    return data


def record_id(record: Any, index: int) -> str:
    if isinstance(record, dict) and "id" in record:
        return str(record["id"])
    return f"#{index}"


def validate_record(record: Any, index: int, source: str) -> None:
    """Raise DataError naming `source` and the record id for any structural problem."""
    rid = record_id(record, index)
    where = f"{source}: record {rid}"
    if not isinstance(record, dict):
        raise DataError(f"{where}: a record must be an object", "invalid record")
    if "id" not in record:
        raise DataError(f"{where}: missing 'id'", "missing id")
    turns = record.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise DataError(f"{where}: empty or missing 'conversations'", "empty conversations")
    for i, turn in enumerate(turns):
        expected = "human" if i % 2 == 0 else "gpt"
        if not isinstance(turn, dict) or turn.get("from") != expected or not isinstance(turn.get("value"), str):
            raise DataError(f"{where}: turn {i} must be {{'from': '{expected}', 'value': str}}, got {turn!r:.80}",
                            "bad turns")
    if len(turns) % 2:
        raise DataError(f"{where}: the last turn is a question with no answer", "bad turns")
    n_tags = sum(t["value"].count(IMAGE_TAG) for t in turns)
    has_image = bool(record.get("image"))
    if has_image and IMAGE_TAG not in turns[0]["value"]:
        raise DataError(f"{where}: has an image but no {IMAGE_TAG} tag in the first human turn", "missing image tag")
    if has_image and n_tags != 1:
        raise DataError(f"{where}: expected one {IMAGE_TAG} tag, found {n_tags}", "missing image tag")
    if not has_image and n_tags:
        raise DataError(f"{where}: has an {IMAGE_TAG} tag but no image", "image tag without image")
