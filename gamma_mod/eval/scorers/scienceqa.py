"""ScienceQA test split: accuracy and IMG accuracy with the official answer rule.

Reproduces haotian-liu/LLaVA llava/eval/eval_science_qa.py (identical in dvlab-research/MGM
mgm/eval/eval_science_qa.py), run by LLaVA-1.5's scripts/v1_5/eval/sqa.sh:

    for every problem of the split (pid_splits.json), in that order:
        no answer line                        -> "FAILED" (counted, wrong)
        text == one of "A".."E"                -> that letter   (exact: "", " A", "A\\n" are not letters)
        len >= 3, text[0] in "A".."E", text[1:3] == ". "   -> text[0]
        exactly one match of r"The answer is ([A-Z])."     -> that letter (any A-Z; "Z" is simply wrong)
        else                                   -> "FAILED"
    right when the letter's index among the problem's choices equals problems.json "answer"
    IMG: the problems whose answer-line prompt contains "<image>" (an unanswered one is not IMG)

`rule="llava-hr"` reproduces the looser luogen1996/LLaVA-HR llava_hr/eval/eval_science_qa.py, which is
also the copy shipped in Yaxin9Luo/Gamma-MOD (gamma_mod/eval/eval_science_qa.py): the second test drops
`text[1:3] == ". "`, so any answer of 3+ characters starting with an option letter counts as that
letter ("A cat", "Because ..." -> "B").

Deviation: answer lines are joined to problems by `str(question_id)` (official: the raw JSON value,
which LLaVA's question file writes as a string anyway).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from ..questions import Question, read_answers, with_image_tag

logger = logging.getLogger(__name__)

QUESTIONS = "llava_test_CQM-A.json"
IMAGES = "images/test"
PROBLEMS = "problems.json"
SPLITS = "pid_splits.json"
LETTERS = ("A", "B", "C", "D", "E")  # the official --options default
PROMPT_SUFFIX = "Answer with the option's letter from the given choices directly."
RULES = ("llava", "llava-hr")
# The official pattern, unescaped "." included: "The answer is B!" matches too.
_ANSWER_IS = re.compile(r"The answer is ([A-Z]).")


@dataclass(frozen=True)
class ScienceQAOptions:
    rule: str = "llava"  # "llava" (LLaVA-1.5 / MGM) or "llava-hr" (LLaVA-HR / γ-MoD, looser)
    split: str = "test"

    def __post_init__(self):
        if self.rule not in RULES:
            raise ValueError(f"scienceqa rule must be one of {RULES}, got {self.rule!r}")


def parse_answer(text: str, rule: str = "llava") -> str:
    """The official parsed answer: an option letter, any capital letter, or "FAILED"."""
    if text in LETTERS:
        return text
    if len(text) >= 3 and text[0] in LETTERS and (rule == "llava-hr" or text[1:3] == ". "):
        return text[0]
    found = _ANSWER_IS.findall(text)
    return found[0] if len(found) == 1 else "FAILED"


def predicted_index(answer: str, n_choices: int) -> int:
    """Index of the parsed letter among the problem's choices, -1 when it is not one of them."""
    return LETTERS.index(answer) if answer in LETTERS[:n_choices] else -1


def read_questions(data_dir: str | Path, all_questions: bool = False) -> list[Question]:
    """The data folder's test questions with model_vqa_science's --single-pred-prompt prompts."""
    root = Path(data_dir)
    return read_question_file(root / QUESTIONS, root / IMAGES, all_questions)


def read_question_file(question_file: str | Path, image_folder: str | Path, all_questions: bool = False
                       ) -> list[Question]:
    """model_vqa_science with --single-pred-prompt over LLaVA's llava_test_CQM-A.json: "<image>\\n" + the
    first human turn without its tag, stripped, + "\\n" + the letter instruction. γ-MoD skips the
    questions without an image (counted in the log); `all_questions` answers them too (LLaVA-1.5)."""
    questions, text_only = [], 0
    for record in json.loads(Path(question_file).read_text()):
        image = record.get("image")
        if not image:
            text_only += 1
            if not all_questions:
                continue
        text = record["conversations"][0]["value"].replace("<image>", "").strip()
        questions.append(Question(question_id=record["id"],
                                  text=with_image_tag(text, bool(image)) + "\n" + PROMPT_SUFFIX,
                                  image=str(Path(image_folder) / image) if image else None))
    if text_only and not all_questions:
        logger.info("%s: skipped %d text-only questions, as γ-MoD's model_vqa_science does "
                    "(--scienceqa-all-questions answers them)", question_file, text_only)
    return questions


def score(answers_jsonl: str | Path, problems_json: str | Path, splits_json: str | Path,
          options: ScienceQAOptions = ScienceQAOptions()) -> dict[str, float]:
    problems = json.loads(Path(problems_json).read_text())
    splits = json.loads(Path(splits_json).read_text())
    if options.split not in splits:
        raise ValueError(f"{splits_json}: no split {options.split!r}; has {sorted(splits)}")
    answers = {str(r["question_id"]): r for r in read_answers(answers_jsonl)}
    correct = total = img_correct = img_total = failed = missing = 0
    for pid in splits[options.split]:
        if pid not in problems:
            raise ValueError(f"{problems_json}: no problem {pid!r} (listed in {splits_json})")
        row = answers.get(pid)
        missing += row is None
        answer = parse_answer(row["text"], options.rule) if row is not None else "FAILED"
        failed += answer == "FAILED"
        ok = predicted_index(answer, len(problems[pid]["choices"])) == problems[pid]["answer"]
        multimodal = row is not None and "<image>" in row.get("prompt", "")
        correct += ok
        total += 1
        img_correct += ok and multimodal
        img_total += multimodal
    if missing:
        logger.warning("scienceqa: %d of %d %s problems unanswered, counted wrong (as the official script)",
                       missing, total, options.split)
    return {
        "accuracy": correct / max(1, total), "total": total,
        "img_accuracy": img_correct / max(1, img_total), "img_total": img_total,
        "failed": failed, "missing": missing,
    }


def evaluate(answers_jsonl: Path, data_dir: Path, out_dir: Path,
             options: ScienceQAOptions = ScienceQAOptions()) -> dict[str, float]:
    root = Path(data_dir)
    return score(answers_jsonl, root / PROBLEMS, root / SPLITS, options)
