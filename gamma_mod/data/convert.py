"""Move `<image>` to the start of the first human turn (γ-MoD's modify_data_config step).

Masked routing learning treats everything up to the last image token as routable, so the image
must sit right after the system prompt, before the question.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from .formats import IMAGE_TAG

_TAG_WITH_NEWLINES = re.compile(r"\n*" + re.escape(IMAGE_TAG) + r"\n*")


def move_image_to_front(records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """Returns (new records, how many changed). Records without an image tag are left as they are."""
    out, changed = [], 0
    for record in records:
        turns = record.get("conversations") or []
        if not turns or IMAGE_TAG not in turns[0].get("value", ""):
            out.append(record)
            continue
        value = turns[0]["value"]
        rest = _TAG_WITH_NEWLINES.sub("\n", value).strip()
        new_value = f"{IMAGE_TAG}\n{rest}" if rest else IMAGE_TAG
        if new_value == value:
            out.append(record)
            continue
        new_record = copy.deepcopy(record)
        new_record["conversations"][0]["value"] = new_value
        out.append(new_record)
        changed += 1
    return out, changed
