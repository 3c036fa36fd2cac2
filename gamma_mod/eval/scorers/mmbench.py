"""MMBench dev: the evaluation server's upload file, plus a local exact-letter accuracy.

The official number comes from the MMBench server (OpenCompass), which takes the xlsx LLaVA-1.5's
haotian-liu/LLaVA scripts/convert_mmbench_for_submission.py writes (scripts/v1_5/eval/mmbench.sh);
we reproduce that file:

    the tsv read with pandas.read_table; columns hint, category, source, image, comment, l2-category
    dropped; a "prediction" column inserted at position 6 (after index, question, A-D); each answer's
    raw text put in the row whose "index" equals the answer's question id (unanswered rows stay empty);
    written with to_excel(index=False, engine="openpyxl")

so the dev tsv gives: index, question, A, B, C, D, prediction, answer, split.

The local accuracy is ours (the server also matches option texts with an LLM and runs circular
evaluation): by default the answer text must equal the answer letter exactly; `lenient=True` (opt-in)
uses the shared option-letter parser. Circular accuracy: rotated copies of a question carry
index + k·1e6; a question counts as solved only when every copy present is.

Writing the xlsx needs pandas and openpyxl (`pip install gamma-mod[eval]`): a clear error otherwise.
Deviation: a column of the drop list that the tsv lacks is skipped (the official script raises).
"""

from __future__ import annotations

import csv
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..questions import Question, read_answers
from .options import parse_option_letter

QUESTIONS = "mmbench_dev_20230712.tsv"
SUBMISSION = "mmbench_dev_20230712.xlsx"
LETTERS = "ABCD"
CIRCULAR_STRIDE = 1_000_000
PROMPT_SUFFIX = "Answer with the option's letter from the given choices directly."
DROPPED_COLUMNS = ("hint", "category", "source", "image", "comment", "l2-category")
PREDICTION_POSITION = 6


@dataclass(frozen=True)
class MMBenchOptions:
    lenient: bool = False  # opt-in: parse "B." / "(C) cat" / "The answer is A" / an option's text


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


def is_none(value: str | None) -> bool:
    """model_vqa_mmbench's is_none over what pandas.read_table makes of a cell: its default NA
    strings become NaN; "nan" / "none" in any case count as absent too."""
    return value is None or value in _PANDAS_NA or value.lower() in ("nan", "none")


# pandas' default na_values (pandas.io.parsers STR_NA_VALUES), matched exactly, unstripped.
_PANDAS_NA = frozenset({"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
                        "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"})


def prompt(row: dict[str, str], single_pred_prompt: bool = False) -> str:
    """The user turn model_vqa_mmbench builds from one TSV row (values verbatim): hint + "\\n" +
    question (no hint when absent), "\\nA. ..." per option up to the first absent one, the letter
    instruction only with --single-pred-prompt."""
    options = []
    for letter in LETTERS:
        if is_none(row.get(letter)):
            break  # the official loop stops at the first absent option
        options.append((letter, row[letter]))
    question = row["question"]
    if not is_none(row.get("hint")):
        question = row["hint"] + "\n" + question
    for letter, option in options:
        question += "\n" + letter + ". " + option
    text = f"<image>\n{question}"
    return text + "\n" + PROMPT_SUFFIX if single_pred_prompt else text


def read_questions(data_dir: str | Path | None, tsv: str | Path | None = None, single_pred_prompt: bool = False
                   ) -> list[Question]:
    """The questions with model_vqa_mmbench's prompts (the one reader: `gamma-mod eval` and the scorer);
    `tsv` defaults to the data folder's dev file. γ-MoD's documented eval_full/mmbench.sh passes no
    --single-pred-prompt (the default here); its eval/mmbench.sh and LLaVA-1.5's do."""
    if tsv is None and data_dir is None:
        raise ValueError("read_questions: give the data folder or the tsv")
    return [Question(question_id=int(row["index"]), text=prompt(row, single_pred_prompt),
                     extra={"category": row.get("category", ""), "_image_base64": row["image"]})
            for row in read_rows(tsv or Path(data_dir) / QUESTIONS)]


def score(answers_jsonl: str | Path, tsv: str | Path, options: MMBenchOptions = MMBenchOptions()) -> dict[str, float]:
    rows = {int(r["index"]): r for r in read_rows(tsv)}
    flat: list[bool] = []
    by_category: dict[str, list[bool]] = defaultdict(list)
    groups: dict[int, list[bool]] = defaultdict(list)
    unparsed = 0
    for answer in read_answers(answers_jsonl):
        index = int(answer["question_id"])
        if index not in rows:
            raise ValueError(f"{tsv}: no row with index {index} (answer in {answers_jsonl})")
        row = rows[index]
        if options.lenient:
            pred = parse_option_letter(answer["text"], "".join(options_of(row)), options_of(row))
        else:
            pred = answer["text"] if answer["text"] in options_of(row) else None
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


def _pandas():
    try:
        import openpyxl  # noqa: F401  to_excel's engine; fail here with the fix, not deep inside pandas
        import pandas
    except ImportError as e:
        raise ImportError(f"writing the MMBench upload xlsx needs pandas and openpyxl ({e.name} is missing): "
                          "pip install 'gamma-mod[eval]'") from e
    return pandas


def write_submission(answers_jsonl: str | Path, tsv: str | Path, out_xlsx: str | Path) -> Path:
    pd = _pandas()
    table = pd.read_table(tsv)
    sheet = table.drop(columns=[c for c in DROPPED_COLUMNS if c in table.columns])
    sheet.insert(PREDICTION_POSITION, "prediction", None)
    # Raw ids, as the official `df["index"] == pred["question_id"]`; a later answer line wins.
    predictions: dict[Any, str] = {r["question_id"]: r["text"] for r in read_answers(answers_jsonl)}
    for question_id, text in predictions.items():
        sheet.loc[table["index"] == question_id, "prediction"] = text
    out = Path(out_xlsx)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.to_excel(out, index=False, engine="openpyxl")
    return out


def evaluate(answers_jsonl: Path, data_dir: Path, out_dir: Path, options: MMBenchOptions = MMBenchOptions()
             ) -> dict[str, Any]:
    tsv = Path(data_dir) / QUESTIONS
    metrics: dict[str, Any] = score(answers_jsonl, tsv, options)
    metrics["submission"] = str(write_submission(answers_jsonl, tsv, Path(out_dir) / SUBMISSION))
    return metrics
