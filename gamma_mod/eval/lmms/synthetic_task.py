"""An offline lmms-eval task over the bundled synthetic held-out split (`stage2_test.json`).

The task definition ships in the package (`tasks/gamma_synthetic.yaml`); the data does not (the
synthetic dataset is generated, `gamma-mod synth`). `write_task(DATA_DIR)` writes a task folder with
the split as a JSONL (absolute image paths) and a YAML that includes the shipped one:

    python -m gamma_mod.eval.lmms.synthetic_task DATA_DIR [--out TASK_DIR]
    python -m lmms_eval --model gamma_mod --model_args pretrained=MODEL --tasks gamma_synthetic \\
        --include_path TASK_DIR

Questions, images and the scoring rule are those of `gamma-mod eval --benchmark synthetic`
(`eval.scorers.synthetic`): the same model and settings give the same accuracy. The question goes
to the model without `<image>`; the plugin puts `<image>\\n` in front, as LLaVA's loader does.
The functions below are the task's `!function` hooks; they import no lmms-eval.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from PIL import Image

from ..questions import IMAGE_TAG
from ..scorers import synthetic as scorer

TASK_NAME = "gamma_synthetic"
BASE_YAML = Path(__file__).resolve().parent / "tasks" / f"{TASK_NAME}.yaml"
DATA_FILE = f"{TASK_NAME}_test.jsonl"


def doc_to_visual(doc: dict[str, Any]) -> list[Image.Image]:
    with Image.open(doc["image"]) as image:
        return [image.convert("RGB")]


def doc_to_text(doc: dict[str, Any], lmms_eval_specific_kwargs: dict | None = None) -> str:
    return doc["question"]


def process_results(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    return {"accuracy": float(scorer.normalize(results[0]) == scorer.normalize(doc["answer"]))}


def write_task(data_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """Write `<out_dir>/gamma_synthetic.yaml` + its JSONL for the split in `data_dir`; returns the YAML."""
    data_dir = Path(data_dir).resolve()
    out = Path(out_dir).resolve() if out_dir is not None else data_dir / "lmms_task"
    split = data_dir / scorer.QUESTIONS
    if not split.is_file():
        raise FileNotFoundError(f"{split}: no synthetic held-out split there (write one with `gamma-mod synth`)")
    questions = scorer.read_questions(data_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for q in questions:
        if not Path(q.image).is_file():
            raise FileNotFoundError(f"{split}: record {q.question_id}: image {q.image} not found")
        rows.append({"question_id": str(q.question_id), "image": str(Path(q.image).resolve()),
                     "question": q.text.replace(IMAGE_TAG, "").strip(), "answer": q.extra["answer"]})
    data = out / DATA_FILE
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    yaml_path = out / f"{TASK_NAME}.yaml"
    # JSON is valid YAML: paths need no quoting rules of their own.
    yaml_path.write_text(f"include: {json.dumps(str(BASE_YAML))}\n"
                         f"dataset_kwargs:\n  data_files:\n    test: {json.dumps(str(data))}\n")
    return yaml_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gamma_mod.eval.lmms.synthetic_task",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("data", help="synthetic dataset folder (stage2_test.json, images/)")
    parser.add_argument("--out", default=None, help="task folder to write (default: DATA/lmms_task)")
    args = parser.parse_args(argv)
    yaml_path = write_task(args.data, args.out)
    print(f"wrote {yaml_path}\nrun: python -m lmms_eval --model gamma_mod --model_args pretrained=MODEL "
          f"--tasks {TASK_NAME} --include_path {yaml_path.parent}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
