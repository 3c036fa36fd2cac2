"""Lenient multiple-choice answer parsing: the opt-in `lenient=true` of MMBench and SEED-Bench.

Ours, not an official rule: the official SEED-Bench score is exact match and MMBench is scored by its
server, so this parser is never the default. ScienceQA, MMMU and MathVista keep their official
parsers in their own modules."""

from __future__ import annotations

import re

_ANSWER_IS = re.compile(r"answer is\s*\(?([A-Z])\b")
_LEADING = re.compile(r"^\(?([A-Z])(?:$|[.):,\s])")
_STANDALONE = re.compile(r"\b([A-Z])\b")


def parse_option_letter(text: str, letters: str = "ABCD", option_texts: dict[str, str] | None = None) -> str | None:
    """The option a free-form answer picks, or None when it names none (or several).

    Tried in order: "B" / "B." / "(B) ..." at the start; "The answer is B"; exactly one standalone
    capital option letter anywhere; the answer equal to one option's text (case-insensitive).
    """
    text = text.strip()
    match = _LEADING.match(text)
    if match and match.group(1) in letters:
        # "A or B" names two options: a leading letter counts only when no other option follows.
        others = {m for m in _STANDALONE.findall(text[match.end():]) if m in letters} - {match.group(1)}
        return None if others else match.group(1)
    match = _ANSWER_IS.search(text)
    if match and match.group(1) in letters:
        return match.group(1)
    found = {m for m in _STANDALONE.findall(text) if m in letters}
    # "A" is also an article: only trust a lone standalone letter when the answer is short.
    if len(found) == 1 and len(text.split()) <= 4:
        return found.pop()
    if option_texts:
        lowered = text.lower().rstrip(".")
        hits = [k for k, v in option_texts.items() if v and v.strip().lower().rstrip(".") == lowered]
        if len(hits) == 1:
            return hits[0]
    return None
