"""MM-Vet: the file the official GPT-4 grader reads, `{"v1_<question_id>": answer}`.

Reproduces haotian-liu/LLaVA scripts/convert_mmvet_for_eval.py (scripts/v1_5/eval/mmvet.sh): every
answer line in file order, key "v1_" + the question id as written (an id already starting "v1_"
becomes "v1_v1_..."; a later line with the same key wins), raw answer text, `json.dump(..., indent=2)`.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..questions import Question, read_answers, read_llava_questions

QUESTIONS = "llava-mm-vet.jsonl"
IMAGES = "images"
SUBMISSION = "mmvet_results.json"


def submission_key(question_id: str | int) -> str:
    return f"v1_{question_id}"


def read_questions(data_dir: str | Path) -> list[Question]:
    root = Path(data_dir)
    return read_llava_questions(root / QUESTIONS, root / IMAGES)


def write_submission(answers_jsonl: str | Path, out_json: str | Path) -> Path:
    out = Path(out_json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({submission_key(r["question_id"]): r["text"] for r in read_answers(answers_jsonl)},
                              indent=2))
    return out


def evaluate(answers_jsonl: Path, data_dir: Path, out_dir: Path, options: None = None) -> dict[str, str]:
    return {"submission": str(write_submission(answers_jsonl, Path(out_dir) / SUBMISSION))}
