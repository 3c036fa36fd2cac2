"""Move `<image>` to the start of the first human turn (γ-MoD's modify_data_config step).

Masked routing learning treats the system prompt and the image tokens as routable and the question
as not, so the image must sit right after the system prompt, before the question:
"What is this?\\n<image>" -> "<image>\\nWhat is this?".
"""

from __future__ import annotations

import copy
from typing import Any

from .formats import IMAGE_TAG


def image_first(value: str) -> str:
    """`value` with its one `<image>` tag (and the newline around it) moved to the front."""
    before, after = value.split(IMAGE_TAG, 1)
    # A tag on its own line leaves the lines around it; an inline tag leaves the words around it.
    joint = "\n" if before.endswith("\n") or after.startswith("\n") else " "
    rest = joint.join(part for part in (before.strip(), after.strip()) if part)
    return f"{IMAGE_TAG}\n{rest}" if rest else IMAGE_TAG


def move_image_to_front(records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """Returns (new records, how many changed); the input is not modified.

    Records with no tag, with several tags (ambiguous; the dataset rejects them anyway) or already
    starting with "<image>\\n" come back unchanged and are not counted.
    """
    out, changed = [], 0
    for record in records:
        turns = record.get("conversations") if isinstance(record, dict) else None
        first = turns[0] if isinstance(turns, list) and turns and isinstance(turns[0], dict) else {}
        value = first.get("value")
        if not isinstance(value, str) or value.count(IMAGE_TAG) != 1:
            out.append(record)
            continue
        new_value = image_first(value)
        if new_value == value:
            out.append(record)
            continue
        new_record = copy.deepcopy(record)
        new_record["conversations"][0]["value"] = new_value
        out.append(new_record)
        changed += 1
    return out, changed
