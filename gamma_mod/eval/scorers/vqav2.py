"""VQAv2 test-dev: the EvalAI submission file `[{"question_id": int, "answer": str}]`.

Answers go through the shared VQA normalisation (LLaVA's convert_vqav2_for_submission does the
same). The server wants every test2015 question: given the full question file, unanswered ones
are written with an empty answer.
"""

from __future__ import annotations

from pathlib import Path

from ..questions import Question, read_answers, read_jsonl, read_llava_questions, write_json
from .vqa_normalize import normalize_answer

QUESTIONS = "llava_vqav2_mscoco_test-dev2015.jsonl"
ALL_QUESTIONS = "llava_vqav2_mscoco_test2015.jsonl"
IMAGES = "test2015"


def read_questions(data_dir: str | Path) -> list[Question]:
    root = Path(data_dir)
    return read_llava_questions(root / QUESTIONS, root / IMAGES)


def write_submission(answers_jsonl: str | Path, out_json: str | Path, all_questions: str | Path | None = None) -> Path:
    answers = {int(r["question_id"]): normalize_answer(r["text"]) for r in read_answers(answers_jsonl)}
    order = [int(q["question_id"]) for q in read_jsonl(all_questions)] if all_questions else list(answers)
    return write_json(out_json, [{"question_id": qid, "answer": answers.get(qid, "")} for qid in order])


def evaluate(answers_jsonl: Path, data_dir: Path, out_dir: Path) -> dict[str, str]:
    full = Path(data_dir) / ALL_QUESTIONS
    path = write_submission(answers_jsonl, Path(out_dir) / "vqav2_test-dev2015_submission.json",
                            full if full.exists() else None)
    return {"submission": str(path)}
