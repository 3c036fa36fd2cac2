"""TextVQA val: the official VQA accuracy, joined as LLaVA-1.5's eval_textvqa.py joins it.

Reproduces haotian-liu/LLaVA llava/eval/eval_textvqa.py + TextVQAAccuracyEvaluator (m4c_evaluator.py),
run by scripts/v1_5/eval/textvqa.sh:

    annotation key = (annotation "image_id", annotation "question".lower())
    answer key     = (answer "question_id" -- LLaVA's question file uses the image id there --,
                      the question parsed from the answer's prompt, lower-cased)
    prompt parsing: "OCR tokens: ... Question: Q Short answer:" -> Q; a 3-line prompt holding
                    "Reference OCR token: " -> its question line; a 2-line prompt -> its first line;
                    anything else is an error
    score per answer line: every human answer is left out in turn, the prediction scores
                    min(#matches among the other 9 / 3, 1), averaged over the 10 (all EvalAI-normalised)
    accuracy = mean over the answer lines

Our loop writes the prompt with LLaVA's "<image>\\n" prefix; it is removed before parsing. When the
answer's question id is not an image id of the annotation and the line carries "image", the image
file's stem is used (the official script would stop there with a KeyError).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..questions import IMAGE_TAG, Question, read_answers, read_llava_questions
from .vqa_normalize import normalize_answer

QUESTIONS = "llava_textvqa_val_v051_ocr.jsonl"
IMAGES = "train_images"
ANNOTATION = "TextVQA_0.5.1_val.json"
_OCR_PROMPT = re.compile(r"Question: (.*?) Short answer:", re.DOTALL)


def vqa_accuracy(prediction: str, human_answers: list[str]) -> float:
    pred = normalize_answer(prediction)
    humans = [normalize_answer(a) for a in human_answers]
    if len(humans) != 10:
        raise ValueError(f"VQA accuracy needs 10 human answers, got {len(humans)}")
    scores = []
    for left_out in range(len(humans)):
        matching = sum(1 for i, a in enumerate(humans) if i != left_out and a == pred)
        scores.append(min(1.0, matching / 3))
    return sum(scores) / len(scores)


def question_from_prompt(prompt: str) -> str:
    """eval_textvqa.py's prompt_processor, after removing our loop's "<image>\\n" prefix."""
    if prompt.startswith(IMAGE_TAG + "\n"):
        prompt = prompt[len(IMAGE_TAG) + 1:]
    lines = prompt.split("\n")
    if prompt.startswith("OCR tokens: "):
        match = _OCR_PROMPT.search(prompt)
        if match is None:
            raise ValueError(f"TextVQA prompt starts with 'OCR tokens: ' but has no 'Question: ... Short answer:': "
                             f"{prompt!r}")
        question = match.group(1)
    elif "Reference OCR token: " in prompt and len(lines) == 3:
        question = lines[1] if prompt.startswith("Reference OCR token:") else lines[0]
    elif len(lines) == 2:
        question = lines[0]
    else:
        raise ValueError(f"TextVQA prompt in none of the official shapes (2 lines, or 3 with 'Reference OCR "
                         f"token: '): {prompt!r}")
    return question.lower()


def read_questions(data_dir: str | Path) -> list[Question]:
    root = Path(data_dir)
    return read_llava_questions(root / QUESTIONS, root / IMAGES)


def score(answers_jsonl: str | Path, annotation: str | Path) -> dict[str, float]:
    records = json.loads(Path(annotation).read_text())["data"]
    truth = {(str(a["image_id"]), a["question"].lower()): a["answers"] for a in records}
    image_ids = {str(a["image_id"]) for a in records}
    scores = []
    for row in read_answers(answers_jsonl):
        image_id = str(row["question_id"])
        if image_id not in image_ids and row.get("image"):
            image_id = Path(str(row["image"])).stem
        key = (image_id, question_from_prompt(row["prompt"]))
        if key not in truth:
            raise ValueError(f"{annotation}: no question {key[1]!r} on image {key[0]!r} "
                             f"(answer {row['question_id']!r} in {answers_jsonl})")
        scores.append(vqa_accuracy(row["text"], truth[key]))
    return {"accuracy": sum(scores) / max(1, len(scores)), "answered": len(scores), "total": len(records)}


def evaluate(answers_jsonl: Path, data_dir: Path, out_dir: Path, options: None = None) -> dict[str, float]:
    return score(answers_jsonl, Path(data_dir) / ANNOTATION)
