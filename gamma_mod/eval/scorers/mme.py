"""MME: per-subtask acc and acc+, perception and cognition sums, as MME's official calculation.

Reproduces the two steps of LLaVA-1.5's scripts/v1_5/eval/mme.sh (the MME benchmark's eval_tool,
BradyFU/Awesome-Multimodal-Large-Language-Models Evaluation branch, which LLaVA's docs/Evaluation.md
points to; the γ-MoD repository does not ship it):

convert_answer_to_mme.py (LLaVA eval.zip):
    task = question_id.split("/")[0]; txt = question_id.split("/")[-1].split(".")[0] + ".txt"
    prompt: "Answer the question using a single word or phrase." removed (then stripped); when
        "Please answer yes or no." is absent, " Please answer yes or no." is appended, or
        "  Please answer yes or no." when the single-space form is not a ground-truth question
    ground truth: MME_Benchmark_release_version/<task>/[questions_answers_YN/]<txt> lines "question\\tYes|No"
    one line "txt\\tprompt\\tgt\\tanswer" per answer, per task, in answer-file order
eval_tool/calculation.py:
    the task file's lines are read back and cut into consecutive PAIRS (one image = two questions:
        pairing is by position, not by image name); a line that does not split into 4 fields is skipped
    answer (lower-cased): "yes"/"no", else "yes" if "yes" in its first 4 characters, else "no" if
        "no" is, else "other" (wrong)
    acc = right / questions read; acc+ = pairs with both right / pairs; score = 100·acc + 100·acc+
    perception = sum over 10 tasks (max 2000), cognition = sum over 4 (max 800)

The answer text goes through the same text file the official tool reads (so an answer holding a
newline or a tab shifts or drops lines exactly as there). Our loop's question ids carry "#<line>"
after the image path (LLaVA's file reuses an id for an image's two questions): it is cut off first.

Deviations: a task with no answers is left out of the sums and listed in `tasks_missing` (the official
tool stops on a missing task file); an odd line count or an unknown question raises a clear error
(official: an assertion / KeyError).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path

from ..questions import IMAGE_TAG, Question, read_answers, read_jsonl, with_image_tag

logger = logging.getLogger(__name__)

QUESTIONS = "llava_mme.jsonl"
RELEASE = "MME_Benchmark_release_version"
PERCEPTION = ("existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark", "artwork", "OCR")
COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")
SHORT_ANSWER = "Answer the question using a single word or phrase."
YES_NO = "Please answer yes or no."


def parse_yes_no(text: str) -> str:
    """calculation.py's parse_pred_ans, on the lower-cased answer."""
    text = text.lower()
    if text in ("yes", "no"):
        return text
    return "yes" if "yes" in text[:4] else "no" if "no" in text[:4] else "other"


def read_ground_truth(release_dir: str | Path) -> dict[tuple[str, str, str], str]:
    """(task, txt file name, question) -> answer, as convert_answer_to_mme.get_gt reads the release."""
    truth = {}
    for task_dir in sorted(p for p in Path(release_dir).iterdir() if p.is_dir()):
        qa_dir = task_dir / "questions_answers_YN" if (task_dir / "images").exists() else task_dir
        for txt in sorted(qa_dir.glob("*.txt")):
            for n, line in enumerate(txt.read_text().splitlines(), 1):
                fields = line.strip().split("\t")
                if len(fields) != 2:
                    raise ValueError(f"{txt}:{n}: expected 'question<TAB>answer', got {line!r}")
                truth[(task_dir.name, txt.name, fields[0])] = fields[1]
    return truth


def read_questions(data_dir: str | Path) -> list[Question]:
    """LLaVA's llava_mme.jsonl reuses an image's id for its two questions: ids get the line number."""
    root = Path(data_dir)
    questions = []
    for i, row in enumerate(read_jsonl(root / QUESTIONS)):
        image = row["image"]
        questions.append(Question(question_id=f"{row['question_id']}#{i}", text=with_image_tag(row["text"], True),
                                  image=str(root / RELEASE / image),
                                  extra={"image": image, "category": row.get("category", image.split("/")[0])}))
    return questions


def official_prompt(prompt: str, task: str, txt: str, truth: dict[tuple[str, str, str], str]) -> str:
    """convert_answer_to_mme.py's prompt rewrite (after dropping our loop's "<image>\\n")."""
    if prompt.startswith(IMAGE_TAG + "\n"):
        prompt = prompt[len(IMAGE_TAG) + 1:]
    if SHORT_ANSWER in prompt:
        prompt = prompt.replace(SHORT_ANSWER, "").strip()
    if YES_NO not in prompt:
        prompt = prompt + " " + YES_NO
        if (task, txt, prompt) not in truth:
            prompt = prompt.replace(" " + YES_NO, "  " + YES_NO)
    return prompt


def task_lines(answers_jsonl: str | Path, truth: dict[tuple[str, str, str], str]) -> dict[str, list[str]]:
    """Each task's result file as calculation.py reads it back (lines with their newline)."""
    text: dict[str, str] = defaultdict(str)
    for row in read_answers(answers_jsonl):
        qid = str(row["question_id"]).split("#")[0]
        task = qid.split("/")[0]
        txt = qid.split("/")[-1].split(".")[0] + ".txt"
        prompt = official_prompt(row["prompt"], task, txt, truth)
        if (task, txt, prompt) not in truth:
            raise ValueError(f"MME: no ground truth for task {task!r}, file {txt!r}, question {prompt!r} "
                             f"(answer {row['question_id']!r} in {answers_jsonl})")
        text[task] += "\t".join((txt, prompt, truth[(task, txt, prompt)], row["text"])) + "\n"
    # Read back in text mode: universal newlines, split after each "\n".
    return {task: body.replace("\r\n", "\n").replace("\r", "\n").splitlines(keepends=True)
            for task, body in text.items()}


def task_metrics(task: str, lines: list[str]) -> dict[str, float]:
    if len(lines) % 2:
        raise ValueError(f"MME task {task!r}: {len(lines)} result lines, not pairs (one image = two questions); "
                         "answer both questions of every image, in the question file's order")
    right = questions = both_right = skipped = 0
    for first in range(0, len(lines), 2):
        image_right = 0
        for line in lines[first:first + 2]:
            fields = line.split("\t")
            if len(fields) != 4:  # the official tool prints the line and skips it
                skipped += 1
                continue
            gt, pred = fields[2].lower(), parse_yes_no(fields[3])
            if gt not in ("yes", "no"):
                raise ValueError(f"MME task {task!r}: ground truth {fields[2]!r} is not yes/no")
            questions += 1
            right += pred == gt
            image_right += pred == gt
        both_right += image_right == 2
    acc, acc_plus = right / max(1, questions), both_right / (len(lines) // 2)
    if skipped:
        logger.warning("mme/%s: %d result lines skipped (tab or newline inside the answer), as the official tool",
                       task, skipped)
    return {"acc": acc, "acc_plus": acc_plus, "score": 100 * acc + 100 * acc_plus, "questions": questions,
            "skipped_lines": skipped}


def score(answers_jsonl: str | Path, release_dir: str | Path) -> dict[str, float]:
    truth = read_ground_truth(release_dir)
    lines = task_lines(answers_jsonl, truth)
    metrics: dict[str, float] = {}
    for task, task_file in sorted(lines.items()):
        metrics.update({f"{task}/{k}": v for k, v in task_metrics(task, task_file).items()})
    missing = [t for t in PERCEPTION + COGNITION if t not in lines]
    if missing:
        logger.warning("mme: no answers for tasks %s; left out of the sums", missing)
    metrics["perception"] = sum(metrics.get(f"{t}/score", 0.0) for t in PERCEPTION)
    metrics["cognition"] = sum(metrics.get(f"{t}/score", 0.0) for t in COGNITION)
    metrics["tasks_missing"] = len(missing)
    return metrics


def evaluate(answers_jsonl: Path, data_dir: Path, out_dir: Path, options: None = None) -> dict[str, float]:
    return score(answers_jsonl, Path(data_dir) / RELEASE)
