"""MathVista testmini: the official rule-based answer extraction and scoring (no GPT call).

Reproduces lupantech/MathVista evaluation/extract_answer.py + calculate_score.py as copied in
dvlab-research/MGM mgm/eval/MathVista/ and luogen1996/LLaVA-HR llava_hr/eval/ (the copy γ-MoD ships),
with the GPT extraction step failing, which the official code turns into an empty extraction:

extract_answer: "" -> ""; a multi-choice answer equal to one of the choices -> itself; integer
    questions: int(answer) when it parses; float questions: str(float(answer)) when it parses;
    `quick_extract=True` (the official --quick_extract, off by default): 'The answer is "X".' -> X;
    otherwise -> "" (the GPT step)
normalize_extracted_answer: multi-choice: "(B) ..." -> "B"; a letter of the options -> that choice's
    text; anything else -> the choice with the smallest Levenshtein distance (for "" the shortest
    choice, the first on ties); integer -> str(int(float(x))); float -> str(round(float(x), precision));
    list -> str(x); failures -> None
right = normalized extraction == the testmini "answer" string; accuracy = right / answered, and per
    question type, answer type and metadata field (category, task, context, grade, skills, ...)

Prompts are LLaVA-HR's model_mathvista.py (γ-MoD's copy): the zero-shot "solution" query of
build_query.py ("Question: ... (Unit: ...)", "Choices:" lines, the type hint, "Solution:") plus
"\\nAnswer the question using a single word or phrase.". LLaVA-HR also collapses a run of one repeated
character at the end of each response ("1000" -> "10"); `collapse_repeats=True` reproduces that (off
by default: the MathVista and MGM pipelines do not).

Deviation: `int(precision)` where the MGM copy passes the JSON value as is (testmini.json stores ints).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..questions import Question, read_answers, with_image_tag

PROBLEMS = "testmini.json"
PROMPT_SUFFIX = "Answer the question using a single word or phrase."
METADATA_KEYS = ("language", "source", "category", "task", "context", "grade", "skills")
_QUICK = re.compile(r'The answer is "(.*)"\.')
_LETTER = re.compile(r"\(([a-zA-Z])\)")
_TRAILING_REPEAT = re.compile(r"(.)\1+$")
_HINTS = {
    "multi_choice": "Hint: Please answer the question and provide the correct option letter, e.g., A, B, C, D, "
                    "at the end.",
    "integer": "Hint: Please answer the question requiring an integer answer and provide the final value, "
               "e.g., 1, 2, 3, at the end.",
    ("float", 1): "Hint: Please answer the question requiring a floating-point number with one decimal place and "
                  "provide the final value, e.g., 1.2, 1.3, 1.4, at the end.",
    ("float", 2): "Hint: Please answer the question requiring a floating-point number with two decimal places and "
                  "provide the final value, e.g., 1.23, 1.34, 1.45, at the end.",
    "list": "Hint: Please answer the question requiring a Python list as an answer and provide the final list, "
            "e.g., [1, 2, 3], [1.2, 1.3, 1.4], at the end.",
}


@dataclass(frozen=True)
class MathVistaOptions:
    quick_extract: bool = False  # the official --quick_extract rule ('The answer is "X".')
    collapse_repeats: bool = False  # LLaVA-HR's response post-processing ("1000" -> "10")


def build_query(problem: dict[str, Any], pid: str = "?") -> str:
    """build_query.create_one_query, zero-shot, shot_type "solution", no caption or OCR."""
    if problem["question_type"] == "multi_choice":
        hint = _HINTS["multi_choice"]
    elif problem["answer_type"] == "float":
        hint = _HINTS.get(("float", problem.get("precision")))
    else:
        hint = _HINTS.get(problem["answer_type"])
    if hint is None:  # the official code fails here (unbound hint) too
        raise ValueError(f"MathVista problem {pid}: no official hint for answer type {problem['answer_type']!r} "
                         f"with precision {problem.get('precision')!r}")
    question = f"Question: {problem['question']}"
    if problem.get("unit"):
        question += f" (Unit: {problem['unit']})"
    choices = ""
    if problem.get("choices"):
        choices = "\n".join(["Choices:"] + [f"({chr(ord('A') + i)}) {c}" for i, c in enumerate(problem["choices"])])
    elements = [question, choices, hint, "Solution: "]
    return ("\n\n" + "\n".join(e for e in elements if e != "")).strip()


def read_questions(data_dir: str | Path) -> list[Question]:
    root = Path(data_dir)
    problems = json.loads((root / PROBLEMS).read_text())
    return [Question(question_id=pid, image=str(root / p["image"]),
                     text=with_image_tag(build_query(p, pid) + "\n" + PROMPT_SUFFIX, True))
            for pid, p in problems.items()]


def extract_answer(response: str, problem: dict[str, Any], quick_extract: bool = False) -> str:
    if response == "":
        return ""
    if problem["question_type"] == "multi_choice" and response in problem["choices"]:
        return response
    if problem["answer_type"] == "integer":
        try:
            return str(int(response))
        except ValueError:
            pass
    if problem["answer_type"] == "float":
        try:
            return str(float(response))
        except ValueError:
            pass
    if quick_extract:
        match = _QUICK.search(response)
        if match:
            return match.group(1)
    return ""  # the GPT extraction step, which we do not call


def levenshtein(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def normalize_extraction(extraction: str, problem: dict[str, Any]) -> str | None:
    choices = problem["choices"]
    if problem["question_type"] == "multi_choice":
        extraction = extraction.strip()
        letter = _LETTER.findall(extraction)
        if letter:
            extraction = letter[0].upper()
        options = [chr(ord("A") + i) for i in range(len(choices))]
        if extraction in options:
            return choices[options.index(extraction)]
        distances = [levenshtein(extraction, c) for c in choices]
        return choices[distances.index(min(distances))]
    try:
        if problem["answer_type"] == "integer":
            return str(int(float(extraction)))
        if problem["answer_type"] == "float":
            return str(round(float(extraction), int(problem["precision"])))
    except (TypeError, ValueError, OverflowError):  # the official bare except
        return None
    if problem["answer_type"] == "list":
        return str(extraction)
    return extraction


def score(answers_jsonl: str | Path, problems_json: str | Path, options: MathVistaOptions = MathVistaOptions()
          ) -> dict[str, float]:
    problems = json.loads(Path(problems_json).read_text())
    # The official results are keyed by pid: a later line for the same problem wins.
    responses = {str(r["question_id"]): r["text"] for r in read_answers(answers_jsonl)}
    groups: dict[str, list[bool]] = defaultdict(list)
    for pid, response in responses.items():
        if pid not in problems:
            raise ValueError(f"{problems_json}: no problem {pid!r} (answer in {answers_jsonl})")
        problem = problems[pid]
        if options.collapse_repeats:
            response = _TRAILING_REPEAT.sub(r"\1", response)
        prediction = normalize_extraction(extract_answer(response, problem, options.quick_extract), problem)
        correct = prediction == problem["answer"]
        groups["accuracy"].append(correct)
        groups[f"accuracy/question_type/{problem['question_type']}"].append(correct)
        groups[f"accuracy/answer_type/{problem['answer_type']}"].append(correct)
        metadata = problem.get("metadata", {})
        for key in METADATA_KEYS:
            values = metadata.get(key)
            for value in values if isinstance(values, list) else [values] if values is not None else []:
                groups[f"accuracy/{key}/{value}"].append(correct)
    metrics = {k: sum(v) / len(v) for k, v in sorted(groups.items())}
    metrics.setdefault("accuracy", 0.0)
    metrics["answered"] = len(responses)
    return metrics


def evaluate(answers_jsonl: Path, data_dir: Path, out_dir: Path, options: MathVistaOptions = MathVistaOptions()
             ) -> dict[str, float]:
    return score(answers_jsonl, Path(data_dir) / PROBLEMS, options)
