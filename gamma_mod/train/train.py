"""Stage-1 / stage-2 training on the HF Trainer.

    python -m gamma_mod.train.train configs/train/stage2_tiny.yaml optim.lr=1e-4 output_dir=runs/x
    torchrun --nproc_per_node 2 -m gamma_mod.train.train CONFIG.yaml deepspeed=scripts/zero2.json
    deepspeed gamma_mod/train/train.py CONFIG.yaml deepspeed=scripts/zero3.json

setup (config, seed, tokenizer) -> build (model, stage freezing, MoD, LoRA, data) -> loop (Trainer)
-> final save (safetensors + tokenizer + complete.json, written by rank 0).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import sys
from pathlib import Path

import torch
from transformers import TrainingArguments, set_seed

from ..config import ConfigError, load_config, save_config
from ..packaged import resolve_config
from .args import TrainConfig
from . import checkpoint

logger = logging.getLogger("gamma_mod.train")
COMPLETE = "complete.json"


# -- setup ------------------------------------------------------------------------------------------
def resolve_attn_implementation(requested: str) -> str:
    if requested == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        logger.warning("flash-attn is not installed; using SDPA")
        return "sdpa"
    return requested


def training_arguments(cfg: TrainConfig) -> TrainingArguments:
    o = cfg.optim
    return TrainingArguments(
        output_dir=cfg.output_dir,
        per_device_train_batch_size=o.batch_size,
        gradient_accumulation_steps=o.grad_accum,
        learning_rate=o.lr,
        lr_scheduler_type=o.lr_scheduler,
        warmup_steps=o.warmup_ratio,  # a float < 1 is a ratio of the total steps in transformers 5
        num_train_epochs=o.epochs,
        max_steps=o.max_steps,
        weight_decay=o.weight_decay,
        max_grad_norm=o.max_grad_norm,
        bf16=o.bf16,
        activation_checkpointing=o.gradient_checkpointing,
        seed=o.seed,
        data_seed=o.seed,
        logging_steps=cfg.logging_steps,
        save_strategy="steps" if cfg.save_steps > 0 else "no",
        save_steps=cfg.save_steps if cfg.save_steps > 0 else 500,
        save_total_limit=cfg.save_total_limit,
        deepspeed=cfg.deepspeed,
        report_to="none",
        remove_unused_columns=False,
        dataloader_num_workers=o.dataloader_workers,
        disable_tqdm=False,
        use_cpu=not torch.cuda.is_available(),
    )


# -- build ------------------------------------------------------------------------------------------
def build_model(cfg: TrainConfig, tokenizer):
    from ..data.tokenizer import model_token_ids
    from ..model import LlavaLlamaForCausalLM
    from ..model.builder import build_config

    attn = resolve_attn_implementation(cfg.model.attn_implementation)
    dtype = torch.bfloat16 if cfg.optim.bf16 else torch.float32
    if cfg.model.init:
        model = LlavaLlamaForCausalLM.from_pretrained(cfg.model.init, attn_implementation=attn, dtype=dtype)
        expected = model_token_ids(tokenizer)["vocab_size"]
        if model.config.vocab_size < expected:
            raise ValueError(f"model {cfg.model.init} has vocab_size {model.config.vocab_size} but the tokenizer has "
                             f"{expected} tokens: wrong tokenizer for this model?")
    else:
        config = build_config(cfg.model.spec, **model_token_ids(tokenizer))
        config._attn_implementation = attn
        model = LlavaLlamaForCausalLM(config).to(dtype)
    if cfg.model.vision_weights:
        from ..model.checkpoints import load_clip_vision_weights

        load_clip_vision_weights(model, cfg.model.vision_weights)
    if cfg.mod is not None and cfg.mod.layers and model.config.mod_config() is None:
        from ..mod.convert import convert_to_mod

        convert_to_mod(model, cfg.mod.layers, routing_ratio=cfg.mod.routing_ratio, strategy=cfg.mod.strategy,
                       router_aux_loss_coef=cfg.mod.router_aux_loss_coef)
    return model


def set_trainable(model, stage: str) -> None:
    """pretrain: only the projector learns. finetune: projector + LLM (+ routers); vision tower frozen."""
    for p in model.parameters():
        p.requires_grad_(stage == "finetune")
    for p in model.model.vision_tower.parameters():
        p.requires_grad_(False)
    for p in model.model.mm_projector.parameters():
        p.requires_grad_(True)
    # ZeRO-3 partitions hold 0 local elements; ds_numel is the full size.
    def size(p):
        return getattr(p, "ds_numel", p.numel())

    trainable = sum(size(p) for p in model.parameters() if p.requires_grad)
    total = max(1, sum(size(p) for p in model.parameters()))
    logger.info("stage %s: %d of %d parameters trainable (%.1f%%)", stage, trainable, total, 100 * trainable / total)


def apply_lora(model, cfg: TrainConfig):
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                      target_modules=cfg.lora.target_modules, modules_to_save=["mm_projector"], task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def build_dataset(cfg: TrainConfig, tokenizer, model):
    from ..data.dataset import DataCollator, SupervisedDataset
    from ..data.templates import get_template
    from ..model.vision import ImageProcessor

    dataset = SupervisedDataset(
        cfg.data.train_json, cfg.data.image_folder, tokenizer, ImageProcessor.from_model_config(model.config),
        get_template(cfg.data.template), model.config.num_image_tokens, cfg.data.max_length, cfg.data.on_bad_record,
    )
    if len(dataset) == 0:
        raise ValueError(f"{cfg.data.train_json}: no usable records")
    return dataset, DataCollator(tokenizer.pad_token_id)


# -- loop -------------------------------------------------------------------------------------------
def run_training(cfg: TrainConfig) -> Path:
    from ..data.tokenizer import load_tokenizer
    from .trainer import GammaTrainer

    out = Path(cfg.output_dir)
    args = training_arguments(cfg)  # first: under ZeRO-3 it must exist before the model is built
    if cfg.deepspeed:
        import deepspeed

        # ZeRO-3 partitions weights while from_pretrained builds the model; DeepSpeed's own process
        # group must exist by then (the Trainer would only create it later). gloo on CPU.
        deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo")
    set_seed(cfg.optim.seed)
    if args.process_index == 0:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "train_config.yaml")
        (out / COMPLETE).unlink(missing_ok=True)
    tokenizer_path = cfg.model.tokenizer or cfg.model.init
    if not tokenizer_path:
        raise ValueError("model.tokenizer is required when training from a random init (model.init empty)")
    tokenizer = load_tokenizer(tokenizer_path)
    model = build_model(cfg, tokenizer)
    set_trainable(model, cfg.stage)
    if cfg.lora.enable:
        model = apply_lora(model, cfg)
    if cfg.optim.gradient_checkpointing:
        model.enable_input_require_grads()
    dataset, collator = build_dataset(cfg, tokenizer, model)
    trainer = GammaTrainer(model=model, args=args, train_dataset=dataset, data_collator=collator,
                           collapse_patience=cfg.collapse_patience)
    resume = None
    if cfg.resume:
        resume = checkpoint.last_checkpoint(out)
        logger.info("resuming from %s", resume if resume else "scratch (no complete checkpoint yet)")
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)

    if cfg.lora.enable:
        trainer.model = trainer.model.merge_and_unload()
        trainer.model_wrapped = trainer.model
    trainer.save_model(str(out))
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(out)
        summary = {"global_step": trainer.state.global_step, "train_loss": result.training_loss,
                   "log_history": trainer.state.log_history}
        (out / COMPLETE).write_text(json.dumps(summary, indent=1))
        print(f"TRAINING COMPLETE step={trainer.state.global_step} loss={result.training_loss:.6f} out={out}", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    argv = [a for a in argv if not a.startswith("--local_rank") and not a.startswith("--local-rank")]
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config_path = resolve_config("train", argv[0])
    except FileNotFoundError as e:
        raise ConfigError(str(e)) from None
    cfg = load_config(TrainConfig, config_path, argv[1:])
    try:
        run_training(cfg)
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    raise SystemExit(main())
