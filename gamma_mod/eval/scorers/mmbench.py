"""MMBench dev (tsv with answers): option-letter accuracy, per category, and circular accuracy.

Columns: index, question, hint, A..D (blank when absent), answer, category, image (base64), ...
Circular evaluation: rotated copies of a question carry index + k·1e6; a question counts as
solved only when every copy present is. With no copies in the file, circular == plain accuracy.
"""

from __future__ import annotations

import csv
import sys
from collections import defaultdict
from pathlib import Path

from ..questions import Question, read_answers
from .options import parse_option_letter

QUESTIONS = "mmbench_dev_20230712.tsv"
LETTERS = "ABCD"
CIRCULAR_STRIDE = 1_000_000
PROMPT_SUFFIX = "Answer with the option's letter from the given choices directly."


def _present(value: str | None) -> bool:
    if value is None:
        return False
    value = value.strip()
    return bool(value) and value.lower() != "nan"


def read_rows(tsv: str | Path) -> list[dict[str, str]]:
    csv.field_size_limit(sys.maxsize)  # the image column is a whole base64 JPEG
    with Path(tsv).open(newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def options_of(row: dict[str, str]) -> dict[str, str]:
    return {k: row[k] for k in LETTERS if _present(row.get(k))}


def read_questions(data_dir: str | Path, tsv: str | Path | None = None) -> list[Question]:
    """LLaVA's model_vqa_mmbench prompt: hint, question, "A. ..." lines, the letter instruction."""
    rows = read_rows(tsv or Path(data_dir) / QUESTIONS)
    questions = []
    for row in rows:
        options = options_of(row)
        parts = [row["hint"].strip()] if _present(row.get("hint")) else []
        parts += [row["question"].strip()] + [f"{k}. {v.strip()}" for k, v in options.items()] + [PROMPT_SUFFIX]
        questions.append(Question(
            question_id=int(row["index"]), text="<image>\n" + "\n".join(parts),
            extra={"category": row.get("category", ""), "_image_base64": row["image"]},
        ))
    return questions


def score(answers_jsonl: str | Path, tsv: str | Path) -> dict[str, float]:
    rows = {int(r["index"]): r for r in read_rows(tsv)}
    flat: list[bool] = []
    by_category: dict[str, list[bool]] = defaultdict(list)
    groups: dict[int, list[bool]] = defaultdict(list)
    unparsed = 0
    for answer in read_answers(answers_jsonl):
        index = int(answer["question_id"])
        row = rows[index]
        pred = parse_option_letter(answer["text"], "".join(options_of(row)), options_of(row))
        unparsed += pred is None
        ok = pred == row["answer"].strip()
        flat.append(ok)
        by_category[row.get("category", "")].append(ok)
        groups[index % CIRCULAR_STRIDE].append(ok)
    metrics = {
        "accuracy": sum(flat) / max(1, len(flat)), "answered": len(flat), "unparsed": unparsed,
        "circular_accuracy": sum(all(g) for g in groups.values()) / max(1, len(groups)),
        "circular_groups": len(groups),
    }
    metrics.update({f"accuracy/{k}": sum(v) / len(v) for k, v in sorted(by_category.items()) if k})
    return metrics


def evaluate(answers_jsonl: Path, data_dir: Path, out_dir: Path) -> dict[str, float]:
    return score(answers_jsonl, Path(data_dir) / QUESTIONS)


