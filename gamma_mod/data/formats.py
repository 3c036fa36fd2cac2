"""LLaVA conversation JSON: `[{id, image?, conversations: [{from: human|gpt, value}]}]`.

The format of llava_v1_5_mix665k.json and blip_laion_cc_sbu_558k.json. Validation is structural
only (roles, image tag vs image field); whether the image file opens is the dataset's check.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import DataError

__all__ = ["DataError", "IMAGE_TAG", "iter_record_texts", "read_records", "record_id", "validate_record"]

IMAGE_TAG = "<image>"


def read_records(path: str | Path) -> list[Any]:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError("no such data file", "missing file", source=path) from None
    except json.JSONDecodeError as e:
        raise DataError(f"not valid JSON ({e})", "bad json", source=path) from None
    if not isinstance(data, list):
        raise DataError(f"expected a JSON list of records, got {type(data).__name__}", "bad json", source=path)
    return data


_JSON_SPACE = re.compile(r"[ \t\n\r]*")  # what JSON counts as whitespace between values


def iter_record_texts(path: str | Path) -> Iterator[tuple[str, Any]]:
    """Each record of the JSON list as (its exact JSON text, the parsed record), one at a time: a caller that
    keeps the texts holds one parsed record, not the whole list (665K records: GBs of Python objects).
    Whatever is wrong with the file raises read_records' error for it."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        read_records(path)  # raises "no such data file"
        raise
    decoder = json.JSONDecoder()
    try:
        i = _JSON_SPACE.match(text).end()
        if text[i:i + 1] != "[":
            raise ValueError("not a list")
        i = _JSON_SPACE.match(text, i + 1).end()
        if text[i:i + 1] == "]":
            i = _JSON_SPACE.match(text, i + 1).end()
        else:
            while True:
                record, end = decoder.raw_decode(text, i)
                yield text[i:end], record
                i = _JSON_SPACE.match(text, end).end()
                separator = text[i:i + 1]
                i = _JSON_SPACE.match(text, i + 1).end()
                if separator == "]":
                    break
                if separator != ",":
                    raise ValueError("expected , or ]")
        if i != len(text):
            raise ValueError("extra data after the list")
    except ValueError:  # json.JSONDecodeError included
        read_records(path)  # raises the file's error ("not valid JSON (...)", "expected a JSON list ...")
        raise


def record_id(record: Any, index: int) -> str:
    """The record's id, or its position ("#3") when it has none, so errors can still point at it."""
    if isinstance(record, dict) and "id" in record:
        return str(record["id"])
    return f"#{index}"


def validate_record(record: Any, index: int, source: str | Path | None = None) -> None:
    """Raise DataError naming `source` and the record id for any structural problem."""
    rid = record_id(record, index)

    def fail(message: str, reason: str) -> DataError:
        return DataError(message, reason, record_id=rid, source=source)

    if not isinstance(record, dict):
        raise fail(f"a record must be an object, got {type(record).__name__}", "invalid record")
    if "id" not in record:
        raise fail("missing 'id'", "missing id")
    turns = record.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise fail("empty or missing 'conversations'", "empty conversations")
    for i, turn in enumerate(turns):
        expected = "human" if i % 2 == 0 else "gpt"
        if not isinstance(turn, dict) or turn.get("from") != expected or not isinstance(turn.get("value"), str):
            raise fail(f"turn {i} must be {{'from': '{expected}', 'value': str}} (roles alternate human/gpt), "
                       f"got {turn!r:.80}", "bad turns")
    if len(turns) % 2:
        raise fail("the last turn is a question with no answer", "bad turns")
    image = record.get("image")
    if image is not None and not isinstance(image, str):
        # Some LLaVA-derived sets hold a list of images; one image per sample is what the model takes.
        raise fail(f"'image' must be one file name, got {type(image).__name__}", "invalid record")
    n_tags = sum(t["value"].count(IMAGE_TAG) for t in turns)
    if image:
        if IMAGE_TAG not in turns[0]["value"]:
            raise fail(f"has an image but no {IMAGE_TAG} tag in the first human turn", "missing image tag")
        if n_tags != 1:
            raise fail(f"expected one {IMAGE_TAG} tag, found {n_tags}", "too many image tags")
    elif n_tags:
        raise fail(f"has an {IMAGE_TAG} tag but no image", "image tag without image")
