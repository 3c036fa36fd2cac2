"""The quickstart's image-blind baseline (`gamma-mod pipeline`, row "text-only"): trained and scored.

The dense baseline's recipe step for step, on the training records with the image removed
(gamma_mod/eval/textonly.py says why this and not the dense model with a blank picture):
    stage-1 model -> SFT (--stage2-config, its epochs) -> the same extra SFT (--adapt-epochs)
then the held-out questions asked without their images, scored by the same scorer. Its folders:
--out/text_only_sft and --out/text_only (resumable like every other step).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

logger = logging.getLogger("gamma_mod.pipeline")


def train_text_only(args, data, out: Path, stage1: Path, cap: list[str]) -> Path:
    """Train the blind model through the dense baseline's two SFT steps; returns its final folder."""
    from .eval.textonly import write_blind_split
    from .pipeline import _done, train_stage

    blind_json = write_blind_split(data.stage2_train, out / "data_text_only" / "stage2_train.json")
    train_json = [f"data.train_json={blind_json}"]
    sft, final = out / "text_only_sft", out / "text_only"
    if not _done(sft):
        train_stage(args.stage2_config, sft, data, stage="finetune", init=stage1, seed=args.seed,
                    extra=[*cap, *train_json])
    if not _done(final):
        train_stage(args.stage2_config, final, data, stage="finetune", init=sft, seed=args.seed,
                    extra=[f"optim.epochs={args.adapt_epochs}", *cap, *train_json])
    return final


def evaluate_text_only(model_dir: Path, data, out: Path, eval_samples: int, name: str = "text-only (no image)"):
    """The blind model on the held-out questions without images: accuracy overall and per type."""
    from .data.processor import get_processor
    from .eval.answer import generate_answers, question_encoder
    from .eval.scorers import synthetic
    from .eval.textonly import blind_questions
    from .model import LlavaLlamaForCausalLM
    from .pipeline import PipelineReport

    questions = blind_questions(synthetic.read_questions(data.stage2_test, data.images)[:eval_samples])
    model = LlavaLlamaForCausalLM.from_pretrained(model_dir).eval()
    processor = get_processor(model_dir, template="vicuna_v1")
    answers = out / "eval" / f"{model_dir.name}.jsonl"
    answers.parent.mkdir(parents=True, exist_ok=True)
    answers.unlink(missing_ok=True)
    generate_answers(model, questions, question_encoder(processor), processor.tokenizer, answers, batch_size=16,
                     max_new_tokens=3)
    metrics = synthetic.score(answers, data.stage2_test)
    logger.info("%s: %s", name, metrics)
    by_type = {k.split("/", 1)[1]: v for k, v in metrics.items() if k.startswith("accuracy/")}
    return PipelineReport(name=name, accuracy=metrics["accuracy"], prefill_samples_per_s=math.nan,
                          skipped_fraction=math.nan, mod_layers=[], tflops=math.nan, accuracy_by_type=by_type)


__all__ = ["train_text_only", "evaluate_text_only"]
