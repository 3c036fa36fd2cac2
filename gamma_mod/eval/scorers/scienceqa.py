"""ScienceQA test split, image subset (ScienceQA-IMG), with the official answer parsing.

Annotations: `problems.json` `{pid: {"choices", "answer": index, "image"}}` and `pid_splits.json`.
Official rule (LLaVA eval_science_qa.py): the prediction is the option letter itself, or starts
with "X. ", or contains exactly one "The answer is X."; anything else is FAILED (wrong).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..questions import Question, read_answers, with_image_tag

QUESTIONS = "llava_test_CQM-A.json"
IMAGES = "images/test"
PROBLEMS = "problems.json"
SPLITS = "pid_splits.json"
LETTERS = "ABCDE"
PROMPT_SUFFIX = "Answer with the option's letter from the given choices directly."
_ANSWER_IS = re.compile(r"The answer is ([A-Z]).")


def parse_answer(text: str, n_choices: int) -> str | None:
    options = LETTERS[:n_choices]
    text = text.strip()
    if text in options:
        return text
    if len(text) >= 3 and text[0] in options and text[1:3] == ". ":
        return text[0]
    found = _ANSWER_IS.findall(text)
    return found[0] if len(found) == 1 else None


def read_questions(data_dir: str | Path) -> list[Question]:
    """LLaVA's conversation-format test file; single-prediction prompt as in model_vqa_science."""
    root = Path(data_dir)
    questions = []
    for record in json.loads((root / QUESTIONS).read_text()):
        image = record.get("image")
        text = record["conversations"][0]["value"].replace("<image>", "").strip()
        questions.append(Question(
            question_id=record["id"], text=with_image_tag(f"{text}\n{PROMPT_SUFFIX}", bool(image)),
            image=str(root / IMAGES / image) if image else None,
        ))
    return questions


def score(answers_jsonl: str | Path, problems_json: str | Path, splits_json: str | Path | None = None,
          split: str = "test") -> dict[str, float]:
    problems = json.loads(Path(problems_json).read_text())
    allowed = set(json.loads(Path(splits_json).read_text())[split]) if splits_json else None
    all_ok: list[bool] = []
    img_ok: list[bool] = []
    failed = 0
    for row in read_answers(answers_jsonl):
        pid = str(row["question_id"])
        if allowed is not None and pid not in allowed:
            continue
        problem = problems[pid]
        pred = parse_answer(row["text"], len(problem["choices"]))
        failed += pred is None
        ok = pred is not None and LETTERS.index(pred) == problem["answer"]
        all_ok.append(ok)
        if problem.get("image"):
            img_ok.append(ok)
    return {
        "img_accuracy": sum(img_ok) / max(1, len(img_ok)), "img_total": len(img_ok),
        "accuracy": sum(all_ok) / max(1, len(all_ok)), "total": len(all_ok), "unparsed": failed,
    }


def evaluate(answers_jsonl: Path, data_dir: Path, out_dir: Path) -> dict[str, float]:
    root = Path(data_dir)
    splits = root / SPLITS
    return score(answers_jsonl, root / PROBLEMS, splits if splits.exists() else None)
