"""MM-Vet: the file the official GPT-4 grader reads, `{"v1_<id>": answer}` (raw answers, no
normalisation: the grader judges free-form text)."""

from __future__ import annotations

from pathlib import Path

from ..questions import Question, read_answers, read_llava_questions, write_json

QUESTIONS = "llava-mm-vet.jsonl"
IMAGES = "images"


def submission_key(question_id: str | int) -> str:
    qid = str(question_id)
    return qid if qid.startswith("v1_") else f"v1_{qid}"


def read_questions(data_dir: str | Path) -> list[Question]:
    root = Path(data_dir)
    return read_llava_questions(root / QUESTIONS, root / IMAGES)


def write_submission(answers_jsonl: str | Path, out_json: str | Path) -> Path:
    return write_json(out_json, {submission_key(r["question_id"]): r["text"] for r in read_answers(answers_jsonl)})


def evaluate(answers_jsonl: Path, data_dir: Path, out_dir: Path) -> dict[str, str]:
    return {"submission": str(write_submission(answers_jsonl, Path(out_dir) / "mmvet_results.json"))}
