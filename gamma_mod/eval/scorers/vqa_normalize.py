"""The official VQA answer normalisation, shared by TextVQA, VQAv2, VizWiz and OK-VQA.

Reproduces `EvalAIAnswerProcessor` in haotian-liu/LLaVA llava/eval/m4c_evaluator.py (copied there
from facebookresearch/mmf), which LLaVA-1.5's eval_textvqa.py and convert_{vqav2,vizwiz}_for_submission.py
use, and the answer side of the VQA evaluator `VQAEval` (luogen1996/LLaVA-HR llava_hr/eval/vqa_eval.py,
the salesforce/LAVIS copy of the GT-Vision-Lab VQA eval) that OK-VQA goes through.

    normalize_answer (EvalAI): lower-case; drop "," and "?"; "'s" -> " 's"; strip; newlines/tabs -> " ";
        process_punctuation; process_digit_article
    process_punctuation: each official punctuation mark is removed when it touches a space (or when a
        digit-comma-digit appears anywhere), else replaced by a space; then periods not followed by a
        digit are removed
    process_digit_article: lower-case, split; number words -> digits; articles dropped; the official
        contraction table applied word by word

The tables (contractions, number words, articles, punctuation) are the official ones verbatim, kept as
package data in `data/vqa_normalization.json` (extracted from the official source, never hand-typed),
with the official table's own oddities: "somebody'd" maps to "somebodyd", keys such as "Im" can never
match a lower-cased word, and there is no "shed", "shes" or "somethings" entry ("a shed" stays "shed").

Official quirks reproduced on purpose:
- The period strip is `PERIOD_STRIP.sub("", text, re.UNICODE)`: the flag lands in the `count`
  argument (re.UNICODE == 32), so only the first 32 periods are removed.
- The period pattern's look-behind is the typo "(?!<=\\d)", which never fires: a period before a
  digit survives only because of the look-ahead ("3.5" keeps it, "3." loses it).
- EvalAI tests digit-comma-digit with `(?<=\\d)(\\,)+(?=\\d)` after every comma was already removed, so
  that branch never fires there; VQAEval tests `(\\d)(,)(\\d)` on text that still has its commas.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from importlib import resources
from typing import Any

# The official call passes re.UNICODE where `count` goes: at most this many periods are stripped.
PERIOD_STRIP_COUNT = int(re.UNICODE)
PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
EVALAI_COMMA_STRIP = re.compile(r"(?<=\d)(\,)+(?=\d)")
VQAEVAL_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")


@lru_cache(maxsize=1)
def tables() -> dict[str, Any]:
    """The official tables: contractions, number_map, articles, punctuation (plus their source)."""
    text = resources.files(__package__).joinpath("data", "vqa_normalization.json").read_text(encoding="utf-8")
    return json.loads(text)


def process_punctuation(text: str, comma_strip: re.Pattern = EVALAI_COMMA_STRIP) -> str:
    out = text
    # Both conditions are tested on the input text, the replacement on the running output (official).
    glued_number = comma_strip.search(text) is not None
    for p in tables()["punctuation"]:
        if (p + " " in text or " " + p in text) or glued_number:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return PERIOD_STRIP.sub("", out, count=PERIOD_STRIP_COUNT)


def process_digit_article(text: str) -> str:
    t = tables()
    number_map, articles, contractions = t["number_map"], set(t["articles"]), t["contractions"]
    words = [number_map.get(w, w) for w in text.lower().split()]
    return " ".join(contractions.get(w, w) for w in words if w not in articles)


def normalize_answer(text: str) -> str:
    """EvalAIAnswerProcessor: one answer (prediction or human answer) as the official evaluators compare it."""
    text = text.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return process_digit_article(process_punctuation(text, EVALAI_COMMA_STRIP))


def normalize_vqaeval_prediction(text: str) -> str:
    """VQAEval's treatment of a prediction: no lower-casing or comma removal before the punctuation step."""
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return process_digit_article(process_punctuation(text, VQAEVAL_COMMA_STRIP))


def normalize_vqaeval_human(text: str) -> str:
    """VQAEval's treatment of a human answer (only when the humans disagree): punctuation step only."""
    return process_punctuation(text, VQAEVAL_COMMA_STRIP)
