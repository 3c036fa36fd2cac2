"""POPE (COCO): accuracy, precision, recall, F1 and yes-ratio per category (adversarial, popular, random).

Labels: `coco/coco_pope_{category}.json`, one `{"question_id", "image", "text", "label": yes|no}` per
line. The official script pairs answers and labels by position; we pair them by (image, question
text), which gives the same result and survives a resumed, reordered answer file. Yes/no parsing is
LLaVA's eval_pope: first sentence only, commas dropped, "no"/"No"/"not" as a word -> no, else yes.
"""

from __future__ import annotations

from pathlib import Path

from ..questions import Question, read_answers, read_jsonl, read_llava_questions

QUESTIONS = "llava_pope_test.jsonl"
IMAGES = "val2014"
ANNOTATION_DIR = "coco"
CATEGORIES = ("adversarial", "popular", "random")


def parse_yes_no(text: str) -> str:
    first = text.split(".")[0] if "." in text else text
    words = first.replace(",", "").split(" ")
    return "no" if ("No" in words or "not" in words or "no" in words) else "yes"


def binary_metrics(preds: list[str], labels: list[str]) -> dict[str, float]:
    tp = sum(p == "yes" and y == "yes" for p, y in zip(preds, labels))
    fp = sum(p == "yes" and y == "no" for p, y in zip(preds, labels))
    tn = sum(p == "no" and y == "no" for p, y in zip(preds, labels))
    fn = sum(p == "no" and y == "yes" for p, y in zip(preds, labels))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    n = max(1, len(preds))
    return {"accuracy": (tp + tn) / n, "precision": precision, "recall": recall, "f1": f1,
            "yes_ratio": (tp + fp) / n, "total": len(preds)}


def _key(image: str, text: str) -> tuple[str, str]:
    # LLaVA's question file appends "\nAnswer the question using a single word or phrase." and our
    # reader prepends "<image>\n": the key is the image name and the question line itself.
    lines = [ln.strip() for ln in text.replace("<image>", "").strip().splitlines() if ln.strip()]
    return Path(image).name, lines[0] if lines else ""


def read_questions(data_dir: str | Path) -> list[Question]:
    root = Path(data_dir)
    return read_llava_questions(root / QUESTIONS, root / IMAGES)


def score(answers_jsonl: str | Path, annotation_dir: str | Path,
          categories: tuple[str, ...] = CATEGORIES) -> dict[str, float]:
    """Answers must carry "image" (and the question in "prompt"), as the generic loop writes them."""
    answers = {_key(r["image"], r["prompt"]): r["text"] for r in read_answers(answers_jsonl)}
    metrics: dict[str, float] = {}
    f1s = []
    for category in categories:
        path = Path(annotation_dir) / f"coco_pope_{category}.json"
        if not path.exists():
            continue
        preds, labels = [], []
        for label in read_jsonl(path):
            key = _key(label["image"], label["text"])
            if key in answers:
                preds.append(parse_yes_no(answers[key]))
                labels.append(label["label"])
        if not preds:
            continue
        result = binary_metrics(preds, labels)
        f1s.append(result["f1"])
        metrics.update({f"{category}/{k}": v for k, v in result.items()})
    metrics["f1_mean"] = sum(f1s) / len(f1s) if f1s else 0.0
    return metrics


def evaluate(answers_jsonl: Path, data_dir: Path, out_dir: Path) -> dict[str, float]:
    return score(answers_jsonl, Path(data_dir) / ANNOTATION_DIR)
