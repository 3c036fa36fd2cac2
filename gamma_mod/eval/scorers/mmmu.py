"""MMMU validation: the official parse-and-eval rules.

Reproduces MMMU's eval/utils/eval_utils.py + data_utils.py as copied in dvlab-research/MGM
mgm/eval/MMMU/eval/ (run_llava.py parses, eval.py / main_eval_only.py score; the same copy ships
in Yaxin9Luo/Gamma-MOD), with the LLaVA-1.5 prompt config configs/llava1.5.yaml:

prompt: multiple choice "{question}\\n(A) opt\\n(B) opt\\n\\nAnswer with the option's letter from the given
    choices directly."; open "{question}\\nAnswer the question using a single word or phrase.";
    the first image (image_1) only; none when the options hold several images
multiple choice (parse_multi_choice_response): strip , . ! ? ; : ' from both ends (in that order);
    pad with spaces; candidates = letters written "(X)", else letters written " X ", else (for answers of
    more than 5 words) options whose text appears in the answer; several candidates -> the one found
    last; none -> a random letter from random.Random(42), drawn in answer-file order
open (parse_open_response): key sub-answers after "could be / so / is / thus / therefore / final /
    answer / result" (and "=" in the last sentence), the numbers in them, each normalised (numbers ->
    float rounded to 2 decimals; strings lower-cased; one-character strings padded)
right: multiple choice when the letter equals the gold letter (or one of a gold list); open when a
    parsed number equals a gold number or a gold string is contained in a parsed string
accuracy = right / answered, per subject, per discipline (instance-weighted) and overall

Gold answers come from the answer lines' "answer" (the dataset's, as run_llava.py + eval.py); set
`answer_dict` to MMMU's eval/answer_dict_val.json to take them from there (main_eval_only.py; three
open questions have list answers there).

Deviations: questions whose options hold several images are answered text-only by our loop (the
official engine answers a random letter / a fixed invalid string without calling the model); the
random fallback matches run_llava.py only for a one-process run in the official order (per-process
seeding otherwise).
"""

from __future__ import annotations

import ast
import base64
import json
import logging
import random
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..questions import Question, read_answers, with_image_tag

logger = logging.getLogger(__name__)

SPLIT = "validation"
DOMAINS = {
    "Art and Design": ["Art", "Art_Theory", "Design", "Music"],
    "Business": ["Accounting", "Economics", "Finance", "Manage", "Marketing"],
    "Science": ["Biology", "Chemistry", "Geography", "Math", "Physics"],
    "Health and Medicine": ["Basic_Medical_Science", "Clinical_Medicine", "Diagnostics_and_Laboratory_Medicine",
                            "Pharmacy", "Public_Health"],
    "Humanities and Social Science": ["History", "Literature", "Sociology", "Psychology"],
    "Tech and Engineering": ["Agriculture", "Architecture_and_Engineering", "Computer_Science", "Electronics",
                             "Energy_and_Power", "Materials", "Mechanical_Engineering"],
}
# run_llava.py's subject order (its CAT_SHORT2LONG values), which is also the answer order.
SUBJECTS = sorted(s for subjects in DOMAINS.values() for s in subjects)
# configs/llava1.5.yaml's formats as YAML reads them (its blank lines fold into single newlines).
MC_FORMAT = "{}\n{}\nAnswer with the option's letter from the given choices directly."
OPEN_FORMAT = "{}\nAnswer the question using a single word or phrase."
KEY_INDICATORS = ["could be ", "so ", "is ", "thus ", "therefore ", "final ", "answer ", "result "]
_NUMBER_COMMAS = re.compile(r"-?\b\d{1,3}(?:,\d{3})+\b")
_NUMBER_SCIENTIFIC = re.compile(r"-?\d+(?:\.\d+)?[eE][+-]?\d+")
_NUMBER_SIMPLE = re.compile(r"-?(?:\d+\.\d+|\.\d+|\d+\b)(?![eE][+-]?\d+)(?![,\d])")
_OPTION_IMAGE = re.compile(r"<img='(.*?)'>")


@dataclass(frozen=True)
class MMMUOptions:
    answer_dict: str = ""  # path of MMMU's answer_dict_val.json: gold answers from there (main_eval_only.py)
    seed: int = 42  # the official fallback for unparseable multiple-choice answers


# -- parsing -------------------------------------------------------------------------------------
def choice_from_response(response: str, all_choices: list[str], index2ans: dict[str, str]) -> str | None:
    """parse_multi_choice_response without its random fallback: the letter, or None when none is found."""
    for char in [",", ".", "!", "?", ";", ":", "'"]:
        response = response.strip(char)
    response = " " + response + " "  # so that " A " finds a standalone letter at either end
    candidates = [c for c in all_choices if f"({c})" in response]
    bracketed = bool(candidates)
    by_content = False
    if not candidates:
        candidates = [c for c in all_choices if f" {c} " in response]
    if not candidates and len(response.split()) > 5:
        candidates = [k for k, text in index2ans.items() if text.lower() in response.lower()]
        by_content = bool(candidates)
    if len(candidates) <= 1:
        return candidates[0] if candidates else None
    if by_content:
        starts = [response.lower().rfind(index2ans[c].lower()) for c in candidates]
    elif bracketed:
        starts = [response.rfind(f"({c})") for c in candidates]
    else:
        starts = [response.rfind(f" {c} ") for c in candidates]
    return candidates[starts.index(max(starts))]  # the last one mentioned; first on a tie (np.argmax)


def parse_multi_choice(response: str, all_choices: list[str], index2ans: dict[str, str], rng: random.Random) -> str:
    """The official parser: no letter found -> a random one (official: random.seed(42), then random.choice)."""
    letter = choice_from_response(response, all_choices, index2ans)
    return letter if letter is not None else rng.choice(all_choices)


def _is_number(text: str) -> bool:
    try:
        float(text.replace(",", ""))
        return True
    except ValueError:
        return False


def normalize_str(text: str) -> list[Any]:
    text = text.strip()
    if _is_number(text):
        return [round(float(text.replace(",", "")), 2)]
    text = text.lower()
    return [" " + text, text + " "] if len(text) == 1 else [text]


def extract_numbers(text: str) -> list[str]:
    return _NUMBER_COMMAS.findall(text) + _NUMBER_SCIENTIFIC.findall(text) + _NUMBER_SIMPLE.findall(text)


def _key_subresponses(response: str) -> list[str]:
    response = response.strip().strip(".").lower()
    sub_responses = re.split(r"\.\s(?=[A-Z])|\n", response)
    indicators = list(KEY_INDICATORS)
    keys = []
    for index, resp in enumerate(sub_responses):
        if index == len(sub_responses) - 1:
            indicators.append("=")  # the last sentence may be just an equation
        shortest = None
        for indicator in indicators:
            if indicator in resp:
                tail = resp.split(indicator)[-1].strip()
                if not shortest or len(tail) < len(shortest):
                    shortest = tail
        if shortest and shortest.strip() not in [":", ",", ".", "!", "?", ";", ":", "'"]:
            keys.append(shortest)
    return keys or [response]


def parse_open(response: str) -> list[Any]:
    keys = _key_subresponses(response)
    preds = list(keys)
    for key in keys:
        preds.extend(extract_numbers(key))
    normalized = [n for p in preds for n in normalize_str(p)]
    return list(dict.fromkeys(normalized))  # the official set(): order does not change the verdict


def eval_multi_choice(gold: str | list[str], pred: str) -> bool:
    return pred in gold if isinstance(gold, list) else gold == pred


def eval_open(gold: str | list[str], preds: list[Any]) -> bool:
    golds = [n for g in gold for n in normalize_str(g)] if isinstance(gold, list) else normalize_str(gold)
    for pred in preds:
        if isinstance(pred, str):
            if any(isinstance(g, str) and g in pred for g in golds):
                return True
        elif pred in golds:
            return True
    return False


# -- data ----------------------------------------------------------------------------------------
def subject_of(sample_id: str) -> str:
    """"validation_Art_Theory_12" -> "Art_Theory" (main_eval_only.py's rule)."""
    return "_".join(sample_id.split("_")[1:-1])


def build_prompt(question: str, options: list[str], question_type: str) -> str:
    if question_type == "multiple-choice":
        example = "".join(f"({chr(ord('A') + i)}) {option}\n" for i, option in enumerate(options))
        return MC_FORMAT.format(question, example)
    return OPEN_FORMAT.format(question)


def _parquet_rows(path: Path) -> list[dict[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError as e:  # pyarrow comes with `datasets`, a core dependency
        raise ImportError("reading MMMU's parquet files needs pyarrow (pip install pyarrow)") from e
    return pq.read_table(path).to_pylist()


def read_questions(data_dir: str | Path) -> list[Question]:
    """MMMU's Hugging Face snapshot: `<Subject>/validation-*.parquet`, subjects in run_llava.py's order."""
    root = Path(data_dir)
    questions = []
    for subject in SUBJECTS:
        files = sorted((root / subject).glob(f"{SPLIT}-*.parquet"))
        if not files:
            logger.warning("mmmu: no %s/%s-*.parquet under %s", subject, SPLIT, root)
        for row in (r for f in files for r in _parquet_rows(f)):
            options = ast.literal_eval(row["options"])
            option_images = [m for option in options for m in _OPTION_IMAGE.findall(option)]
            image = row.get("image_1") if len(option_images) <= 1 else None
            extra: dict[str, Any] = {"question_type": row["question_type"], "answer": row["answer"],
                                     "options": options}
            if image:
                extra["_image_base64"] = base64.b64encode(image["bytes"]).decode()
            questions.append(Question(question_id=row["id"], extra=extra, text=with_image_tag(
                build_prompt(row["question"], options, row["question_type"]), bool(image))))
    return questions


# -- scoring -------------------------------------------------------------------------------------
def score(answers_jsonl: str | Path, options: MMMUOptions = MMMUOptions()) -> dict[str, float]:
    gold_dict = json.loads(Path(options.answer_dict).read_text()) if options.answer_dict else None
    rng = random.Random(options.seed)
    per_subject: dict[str, list[bool]] = defaultdict(list)
    random_picks = 0
    for row in read_answers(answers_jsonl):
        sample_id = str(row["question_id"])
        if gold_dict is not None:
            if sample_id not in gold_dict:
                raise ValueError(f"{options.answer_dict}: no answer for {sample_id!r}")
            question_type, gold = gold_dict[sample_id]["question_type"], gold_dict[sample_id]["ground_truth"]
        else:
            if "answer" not in row or "question_type" not in row:
                raise ValueError(f"{answers_jsonl}: answer {sample_id!r} lacks 'answer'/'question_type' (written by "
                                 "our MMMU reader); pass answer_dict=answer_dict_val.json instead")
            question_type, gold = row["question_type"], row["answer"]
        if question_type == "multiple-choice":
            choices = row.get("options")
            if choices is None:
                raise ValueError(f"{answers_jsonl}: multiple-choice answer {sample_id!r} lacks 'options'")
            letters = [chr(ord("A") + i) for i in range(len(choices))]
            index2ans = dict(zip(letters, choices))
            pred = choice_from_response(row["text"], letters, index2ans)
            if pred is None:
                random_picks += 1
                pred = rng.choice(letters)
            correct = eval_multi_choice(gold, pred)
        else:
            correct = eval_open(gold, parse_open(row["text"]))
        per_subject[subject_of(sample_id)].append(correct)
    if random_picks:
        logger.info("mmmu: %d multiple-choice answers named no option; a seeded random letter was drawn "
                    "(official rule)", random_picks)
    flat = [c for v in per_subject.values() for c in v]
    metrics: dict[str, float] = {"accuracy": sum(flat) / max(1, len(flat)), "answered": len(flat),
                                 "random_picks": random_picks}
    for domain, subjects in DOMAINS.items():
        scored = [c for s in subjects for c in per_subject.get(s, [])]
        if scored:
            metrics[f"accuracy/{domain}"] = sum(scored) / len(scored)
    metrics.update({f"accuracy/{s}": sum(v) / len(v) for s, v in sorted(per_subject.items())})
    return metrics


def evaluate(answers_jsonl: Path, data_dir: Path, out_dir: Path, options: MMMUOptions = MMMUOptions()
             ) -> dict[str, float]:
    return score(answers_jsonl, options)
