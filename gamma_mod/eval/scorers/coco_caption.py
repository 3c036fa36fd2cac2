"""COCO caption (Karpathy test 5k): CIDEr, BLEU and ROUGE-L through pycocoevalcap.

Reproduces luogen1996/LLaVA-HR llava_hr/eval/eval_caption.py (scripts/v1_5/eval_full/coco_caption.sh;
the same file ships in Yaxin9Luo/Gamma-MOD), which hands the answers to pycocotools' `loadRes` and
pycocoevalcap's `COCOEvalCap.evaluate`:

    the images scored are the answered ones (each must be an image of captions_test5k.json and be
    answered once); references = every annotation caption of the image
    references and captions go through the PTB tokenizer (Stanford CoreNLP, needs `java`)
    CIDEr (CIDEr-D: idf over the scored images' references, sigma 6, clipping), BLEU-1..4, ROUGE-L

We call pycocoevalcap's tokenizer and scorers directly (`pip install gamma-mod[eval]`; a clear error
when it or java is missing). Deviation: METEOR (a java subprocess) and SPICE (downloads Stanford
models) are not computed; the score keys otherwise follow COCOEvalCap's ("CIDEr", "Bleu_4", ...).
Answer lines are joined to images by the question id (LLaVA-HR's caption loader writes the question
file's "id" as "image_id"), converted to the annotation's id type.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

from ..questions import Question, read_answers, read_jsonl, with_image_tag

QUESTIONS = "llava_caption_mscoco_test.jsonl"
ANNOTATION = "captions_test5k.json"
IMAGES = "val2014"


def read_questions(data_dir: str | Path) -> list[Question]:
    """LLaVA-HR's caption question file: `{"id", "image", "text"}` per line."""
    root = Path(data_dir)
    return [Question(question_id=row["id"], text=with_image_tag(row["text"], True),
                     image=str(root / IMAGES / row["image"]), extra={"image": row["image"]})
            for row in read_jsonl(root / QUESTIONS)]


def _scorers():
    try:
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.rouge.rouge import Rouge
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
    except ImportError as e:
        raise ImportError("COCO caption scoring needs pycocoevalcap: pip install 'gamma-mod[eval]'") from e
    if shutil.which("java") is None:
        raise RuntimeError("COCO caption scoring needs java on PATH (pycocoevalcap's PTB tokenizer runs Stanford "
                           "CoreNLP); install a Java runtime")
    return PTBTokenizer, Bleu, Rouge, Cider


def score(answers_jsonl: str | Path, annotation: str | Path) -> dict[str, Any]:
    data = json.loads(Path(annotation).read_text())
    refs: dict[Any, list[dict[str, str]]] = defaultdict(list)
    for ann in data["annotations"]:
        refs[ann["image_id"]].append({"caption": ann["caption"]})
    as_id = type(next(iter(refs))) if refs else str
    captions: dict[Any, list[dict[str, str]]] = {}
    for row in read_answers(answers_jsonl):
        image_id = as_id(row["question_id"])
        if image_id not in refs:
            raise ValueError(f"{annotation}: no image {image_id!r} (answer in {answers_jsonl})")
        if image_id in captions:
            raise ValueError(f"{answers_jsonl}: image {image_id!r} answered twice (CIDEr takes one caption)")
        captions[image_id] = [{"caption": row["text"]}]
    if not captions:
        raise ValueError(f"{answers_jsonl}: no answers to score")
    tokenizer_cls, bleu, rouge, cider = _scorers()
    tokenizer = tokenizer_cls()
    gts = tokenizer.tokenize({k: refs[k] for k in captions})
    res = tokenizer.tokenize(captions)
    metrics: dict[str, Any] = {}
    with contextlib.redirect_stdout(io.StringIO()):  # BLEU prints its counts; stdout carries our JSON
        bleu_scores, _ = bleu(4).compute_score(gts, res)
    metrics.update({f"Bleu_{n + 1}": float(s) for n, s in enumerate(bleu_scores)})
    metrics["ROUGE_L"] = float(rouge().compute_score(gts, res)[0])
    metrics["CIDEr"] = float(cider().compute_score(gts, res)[0])
    metrics["answered"] = len(captions)
    return metrics


def evaluate(answers_jsonl: Path, data_dir: Path, out_dir: Path, options: None = None) -> dict[str, Any]:
    return score(answers_jsonl, Path(data_dir) / ANNOTATION)
