"""VizWiz-VQA test: the EvalAI submission file `[{"image": "VizWiz_test_xxxxxxxx.jpg", "answer": str}]`.

Reproduces haotian-liu/LLaVA scripts/convert_vizwiz_for_submission.py (scripts/v1_5/eval/vizwiz.sh):
one entry per question of the question file (llava_test.jsonl), in THAT file's order (not the answer
file's), "image" copied from the question line, the answer through the official EvalAI normalisation.
Every question must be answered (the converter asserts it; we raise naming the missing ids). Answers
are matched on the raw question id, as the converter does.
"""

from __future__ import annotations

from pathlib import Path

from ..questions import Question, read_answers, read_jsonl, read_llava_questions, write_json
from .vqa_normalize import normalize_answer

QUESTIONS = "llava_test.jsonl"
IMAGES = "test"
SUBMISSION = "vizwiz_test_submission.json"


def read_questions(data_dir: str | Path) -> list[Question]:
    root = Path(data_dir)
    return read_llava_questions(root / QUESTIONS, root / IMAGES)


def write_submission(answers_jsonl: str | Path, question_file: str | Path, out_json: str | Path) -> Path:
    answers = {r["question_id"]: r["text"] for r in read_answers(answers_jsonl)}
    questions = read_jsonl(question_file)
    missing = [q["question_id"] for q in questions if q["question_id"] not in answers]
    if missing:
        raise ValueError(f"vizwiz: {len(missing)} of {len(questions)} questions of {question_file} have no answer in "
                         f"{answers_jsonl} (first: {missing[:5]}); the submission needs every question")
    rows = [{"image": q["image"], "answer": normalize_answer(answers[q["question_id"]])} for q in questions]
    return write_json(out_json, rows)


def evaluate(answers_jsonl: Path, data_dir: Path, out_dir: Path, options: None = None) -> dict[str, str]:
    path = write_submission(answers_jsonl, Path(data_dir) / QUESTIONS, Path(out_dir) / SUBMISSION)
    return {"submission": str(path)}
