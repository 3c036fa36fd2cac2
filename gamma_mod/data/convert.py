"""Move `<image>` to the front of its turn, as LLaVA's training does (γ-MoD's modify_data_config step).

LLaVA's preprocess_multimodal (haotian-liu/LLaVA llava/train/train.py) rewrites every message that
holds the tag, in a record with an image, to "<image>\\n" + the message without the tag, stripped:
"What is this?\\n<image>" -> "<image>\\nWhat is this?". Training (gamma_mod.data.preprocess) applies
the same rule to every record, so this file-level conversion is for inspecting or saving what the
model is trained on. For masked routing learning it is what makes the routable prefix (system
prompt + image tokens) contiguous, with the question after it. Yaxin9Luo/Gamma-MOD's own
modify_data_config.py only handles a tag at the very end ("...\\n<image>"); this rule is the one its
training applies anyway.
"""

from __future__ import annotations

import copy
from typing import Any

from .formats import IMAGE_TAG


def image_first(value: str) -> str:
    """LLaVA's preprocess_multimodal on one message that holds `<image>`: the tag first, then the
    message without it, stripped (inner whitespace kept: "a <image> b" -> "<image>\\na  b")."""
    return (IMAGE_TAG + "\n" + value.replace(IMAGE_TAG, "").strip()).strip()


def move_image_to_front(records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """Returns (new records, how many changed); the input is not modified.

    Only records with an image and one tag are rewritten (a tag without an image, or several tags,
    are errors the dataset reports); records already in that form come back unchanged, uncounted.
    """
    out, changed = [], 0
    for record in records:
        turns = record.get("conversations") if isinstance(record, dict) else None
        values = [t.get("value") for t in turns if isinstance(t, dict)] if isinstance(turns, list) else []
        n_tags = sum(v.count(IMAGE_TAG) for v in values if isinstance(v, str))
        if not record_has_image(record) or n_tags != 1:
            out.append(record)
            continue
        new_turns = [dict(t, value=image_first(t["value"])) if isinstance(t, dict) and isinstance(t.get("value"), str)
                     and IMAGE_TAG in t["value"] else t for t in turns]
        if new_turns == turns:
            out.append(record)
            continue
        new_record = copy.deepcopy(record)
        new_record["conversations"] = copy.deepcopy(new_turns)
        out.append(new_record)
        changed += 1
    return out, changed


def record_has_image(record: Any) -> bool:
    return isinstance(record, dict) and bool(record.get("image"))
