"""MME: per-subtask accuracy and accuracy+, perception and cognition sums.

Ground truth is the benchmark release itself (`MME_Benchmark_release_version/{task}/`): `*.txt`
files of "question\\tYes|No" lines, next to the images or under `questions_answers_YN/`. Each image
has two questions; a task's score is 100·acc (per question) + 100·acc+ (images with both right),
max 200; perception sums 10 tasks (max 2000), cognition 4 (max 800) — the official calculation.py.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from ..questions import Question, read_answers, read_jsonl, with_image_tag

QUESTIONS = "llava_mme.jsonl"
RELEASE = "MME_Benchmark_release_version"
PERCEPTION = ("existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark", "artwork", "OCR")
COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")
SHORT_ANSWER = "Answer the question using a single word or phrase."
YES_NO = "Please answer yes or no."


def parse_yes_no(text: str) -> str:
    """calculation.py: "yes"/"no", else look for either in the first 4 characters, else "other"."""
    text = text.lower()
    if text in ("yes", "no"):
        return text
    return "yes" if "yes" in text[:4] else "no" if "no" in text[:4] else "other"


def read_ground_truth(release_dir: str | Path) -> dict[tuple[str, str, str], str]:
    """(task, image stem, question) -> "yes"/"no"."""
    truth = {}
    for task_dir in sorted(p for p in Path(release_dir).iterdir() if p.is_dir()):
        qa_dir = task_dir / "questions_answers_YN" if (task_dir / "images").is_dir() else task_dir
        for txt in sorted(qa_dir.glob("*.txt")):
            for line in txt.read_text().splitlines():
                if "\t" in line:
                    question, answer = line.rsplit("\t", 1)
                    truth[(task_dir.name, txt.stem, _question_key(question))] = answer.strip().lower()
    return truth


def _question_key(text: str) -> str:
    # The released files and LLaVA's prompt differ in the suffix and spacing ("  Please answer...").
    text = text.replace("<image>", "").replace(SHORT_ANSWER, "").replace(YES_NO, "")
    return " ".join(text.split())


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


def score(answers_jsonl: str | Path, release_dir: str | Path) -> dict[str, float]:
    truth = read_ground_truth(release_dir)
    # task -> image -> [correct per question]
    results: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for row in read_answers(answers_jsonl):
        image = row.get("image") or str(row["question_id"]).split("#")[0]
        task = row.get("category") or image.split("/")[0]
        stem = Path(image).stem
        gold = truth[(task, stem, _question_key(row["prompt"]))]
        results[task][stem].append(parse_yes_no(row["text"]) == gold)
    metrics: dict[str, float] = {}
    for task, images in sorted(results.items()):
        flat = [c for v in images.values() for c in v]
        acc = sum(flat) / len(flat)
        acc_plus = sum(all(v) for v in images.values()) / len(images)
        # acc and acc+ as fractions like every other scorer; the score in MME's points.
        metrics.update({f"{task}/acc": acc, f"{task}/acc_plus": acc_plus, f"{task}/score": 100 * (acc + acc_plus)})
    metrics["perception"] = sum(metrics.get(f"{t}/score", 0.0) for t in PERCEPTION)
    metrics["cognition"] = sum(metrics.get(f"{t}/score", 0.0) for t in COGNITION)
    return metrics


def evaluate(answers_jsonl: Path, data_dir: Path, out_dir: Path) -> dict[str, float]:
    return score(answers_jsonl, Path(data_dir) / RELEASE)
