"""VQAv2 test-dev: the EvalAI submission file `[{"question_id": int, "answer": str}]`.

Reproduces haotian-liu/LLaVA scripts/convert_vqav2_for_submission.py (scripts/v1_5/eval/vqav2.sh):
every question of the full test2015 question file (llava_vqav2_mscoco_test2015.jsonl), in that file's
order, with its answer through the official EvalAI normalisation, or "" when unanswered. Answers are
matched on the raw question id, as the converter does.

Deviation: without the full question file, only the answered questions are written, in answer order
(the server then rejects the file; the converter needs the full file).
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..questions import Question, read_answers, read_jsonl, read_llava_questions, write_json
from .vqa_normalize import normalize_answer

logger = logging.getLogger(__name__)

QUESTIONS = "llava_vqav2_mscoco_test-dev2015.jsonl"
ALL_QUESTIONS = "llava_vqav2_mscoco_test2015.jsonl"
IMAGES = "test2015"
SUBMISSION = "vqav2_test-dev2015_submission.json"


def read_questions(data_dir: str | Path) -> list[Question]:
    root = Path(data_dir)
    return read_llava_questions(root / QUESTIONS, root / IMAGES)


def write_submission(answers_jsonl: str | Path, out_json: str | Path, all_questions: str | Path | None = None) -> Path:
    answers = {r["question_id"]: r["text"] for r in read_answers(answers_jsonl)}
    if all_questions is None:
        logger.warning("vqav2: no %s; the submission holds only the %d answered questions", ALL_QUESTIONS, len(answers))
        order = list(answers)
    else:
        order = [q["question_id"] for q in read_jsonl(all_questions)]
    rows = [{"question_id": qid, "answer": normalize_answer(answers[qid]) if qid in answers else ""} for qid in order]
    return write_json(out_json, rows)


def evaluate(answers_jsonl: Path, data_dir: Path, out_dir: Path, options: None = None) -> dict[str, str]:
    full = Path(data_dir) / ALL_QUESTIONS
    path = write_submission(answers_jsonl, Path(out_dir) / SUBMISSION, full if full.exists() else None)
    return {"submission": str(path)}
