"""VizWiz-VQA test: the EvalAI submission file `[{"image": "VizWiz_test_xxxxxxxx.jpg", "answer": str}]`,
answers through the shared VQA normalisation (as LLaVA's convert_vizwiz_for_submission)."""

from __future__ import annotations

from pathlib import Path

from ..questions import Question, read_answers, read_llava_questions, write_json
from .vqa_normalize import normalize_answer

QUESTIONS = "llava_test.jsonl"
IMAGES = "test"


def read_questions(data_dir: str | Path) -> list[Question]:
    root = Path(data_dir)
    return read_llava_questions(root / QUESTIONS, root / IMAGES)


def write_submission(answers_jsonl: str | Path, out_json: str | Path) -> Path:
    # The loop copies each question's "image" into its answer line; LLaVA's file also uses the image
    # name as the question id, the fallback.
    rows = [{"image": Path(str(r.get("image") or r["question_id"])).name, "answer": normalize_answer(r["text"])}
            for r in read_answers(answers_jsonl)]
    return write_json(out_json, rows)


def evaluate(answers_jsonl: Path, data_dir: Path, out_dir: Path) -> dict[str, str]:
    return {"submission": str(write_submission(answers_jsonl, Path(out_dir) / "vizwiz_test_submission.json"))}
