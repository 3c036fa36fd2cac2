"""Stage-1 / stage-2 training on the HF Trainer.

    python -m gamma_mod.train.train configs/train/stage2_tiny.yaml optim.lr=1e-4 output_dir=runs/x
    torchrun --nproc_per_node 2 -m gamma_mod.train.train CONFIG.yaml deepspeed=scripts/zero2.json
    deepspeed gamma_mod/train/train.py CONFIG.yaml deepspeed=scripts/zero3.json

setup (config, component check, seed, tokenizer) -> build (model + pretrained components, MoD,
trainable groups, LoRA, data) -> loop (Trainer) -> final save (safetensors + tokenizer + complete.json,
written by rank 0).

The output folder is touched only after every input is checked; a finished run (complete.json) is
never modified: `resume=true` on it is a no-op, a new run into it needs `overwrite=true`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import sys
from pathlib import Path

import torch
from transformers import TrainingArguments, set_seed

from ..config import ConfigError, load_config, save_config
from ..errors import DataError, debug_enabled, report_errors
from ..mod.config import ModConfig
from ..model.folder import check_model_folder, check_tokenizer_folder
from ..packaged import resolve_config
from .args import TrainConfig
from . import checkpoint
from .checkpoint import COMPLETE
from .trainable import set_trainable
from .tracking import ConfigLogger, resolve_report_to

REAL_SIZE = 100_000_000  # decoder parameters from which a spec counts as a real (non-test) model

logger = logging.getLogger("gamma_mod.train")


# -- setup ------------------------------------------------------------------------------------------
def resolve_attn_implementation(requested: str) -> str:
    if requested == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        logger.warning("flash-attn is not installed; using SDPA")
        return "sdpa"
    return requested


def training_arguments_kwargs(cfg: TrainConfig, cuda: bool | None = None) -> dict:
    """The HF TrainingArguments of `cfg` as keyword arguments; `cuda` (default: detected) decides tf32,
    which HF refuses without a GPU that has it."""
    o = cfg.optim
    cuda = torch.cuda.is_available() if cuda is None else cuda
    if o.tf32 and not cuda:
        logger.info("optim.tf32 is set but there is no CUDA device: ignored")
    kwargs = dict(
        output_dir=cfg.output_dir,
        per_device_train_batch_size=o.batch_size,
        gradient_accumulation_steps=o.grad_accum,
        learning_rate=o.lr,
        lr_scheduler_type=o.lr_scheduler,
        warmup_steps=o.warmup_ratio,  # a float < 1 is a ratio of the total steps in transformers 5
        num_train_epochs=o.epochs,
        max_steps=o.max_steps,
        weight_decay=o.weight_decay,
        max_grad_norm=o.max_grad_norm,  # 0: no clipping; DeepSpeed's "auto" gradient_clipping takes it too
        bf16=o.bf16,
        tf32=True if o.tf32 and cuda else None,
        activation_checkpointing=o.gradient_checkpointing,
        seed=o.seed,
        data_seed=o.seed,
        logging_steps=cfg.logging_steps,
        save_strategy="steps" if cfg.save_steps > 0 else "no",
        save_steps=cfg.save_steps if cfg.save_steps > 0 else 500,
        save_total_limit=cfg.save_total_limit,
        deepspeed=cfg.deepspeed,
        report_to=resolve_report_to(cfg.trackers()) or "none",
        run_name=cfg.run_name or Path(cfg.output_dir).name,
        remove_unused_columns=False,
        dataloader_num_workers=o.dataloader_workers,
        disable_tqdm=False,
        use_cpu=not cuda,
    )
    if o.optimizer is not None:
        kwargs["optim"] = o.optimizer
    return kwargs


def training_arguments(cfg: TrainConfig) -> TrainingArguments:
    return TrainingArguments(**training_arguments_kwargs(cfg))


def check_pretrained_components(cfg: TrainConfig) -> None:
    """A real-size model built from its spec must get every pretrained part it is made of (LLM, CLIP,
    ConvNeXt) unless `model.allow_random_init` says otherwise: a forgotten path would silently train
    from random weights. `model.init` (a trained folder) needs none."""
    if cfg.model.init or cfg.model.allow_random_init:
        return
    from ..model.builder import load_model_spec
    from ..model.components import decoder_parameter_count, required_components
    from ..model.configuration import LlavaLlamaConfig

    data = load_model_spec(cfg.model.spec)
    size = decoder_parameter_count(data.get("text", {}))
    if size < REAL_SIZE:
        return
    kinds = LlavaLlamaConfig(vision_config=data.get("vision"), **data.get("tower", {}))  # tower family only
    missing = [name for name in required_components(kinds, cfg.stage) if not getattr(cfg.model, name)]
    if missing:
        fields = ", ".join(f"model.{name}" for name in missing)
        raise ValueError(
            f"model.spec {cfg.model.spec!r} is a real-size model ({size / 1e9:.1f}B decoder parameters) but {fields} "
            f"{'is' if len(missing) == 1 else 'are'} not set: training would start from random weights. Point "
            f"{'it' if len(missing) == 1 else 'them'} at local checkpoints (model.llm: an HF Llama folder such as "
            "vicuna-7b-v1.5; model.clip: an HF CLIP folder; model.convnext: a timm / open_clip ConvNeXt checkpoint; "
            "model.mm_adapter: a stage-1 mm_projector.bin), or set model.allow_random_init=true to train from "
            "random weights on purpose.")


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


# -- build ------------------------------------------------------------------------------------------
def build_model(cfg: TrainConfig, tokenizer):
    from ..data.tokenizer import model_token_ids
    from ..model import LlavaLlamaForCausalLM
    from ..model.builder import build_config
    from ..model.components import load_components

    attn = resolve_attn_implementation(cfg.model.attn_implementation)
    dtype = torch.bfloat16 if cfg.optim.bf16 else torch.float32
    image = cfg.model.image.overrides()
    if cfg.model.init:
        model = LlavaLlamaForCausalLM.from_pretrained(cfg.model.init, attn_implementation=attn, dtype=dtype, **image)
        expected = model_token_ids(tokenizer)["vocab_size"]
        if model.config.vocab_size < expected:
            raise ValueError(f"model {cfg.model.init} has vocab_size {model.config.vocab_size} but the tokenizer has "
                             f"{expected} tokens: wrong tokenizer for this model?")
    else:
        config = build_config(cfg.model.spec, image=image, **model_token_ids(tokenizer))
        config._attn_implementation = attn
        if cfg.model.components():
            with default_dtype(dtype):  # a 7B model is never materialised in fp32 first
                model = LlavaLlamaForCausalLM(config)
        else:
            model = LlavaLlamaForCausalLM(config).to(dtype)
    load_components(model, cfg.model.components())
    if cfg.mod is not None:
        apply_mod(model, cfg)
    return model


def training_family(cfg: TrainConfig) -> str | None:
    """The Hugging Face family this run trains (llava_hf, llava_onevision, qwen2_5_vl, qwen3_vl), or None for
    our LLaVA fork: from model.init's config.json model_type, else from a family spec (`family:`)."""
    if cfg.model.init:
        config_file = Path(cfg.model.init) / "config.json"
        if not config_file.is_file():
            return None  # check_inputs names the missing file
        from ..data.processor import FORK_MODEL_TYPES

        model_type = json.loads(config_file.read_text()).get("model_type", "")
        if model_type in FORK_MODEL_TYPES:
            return None
        from ..families import get_family

        return get_family(model_type).name
    from ..families.specs import is_family_spec, load_family_spec

    return load_family_spec(cfg.model.spec).family if is_family_spec(cfg.model.spec) else None


def build_family_model(cfg: TrainConfig):
    """(model, processor) of a Hugging Face family run. The processor folder is model.tokenizer (default:
    model.init); a model built from a family spec takes its token ids (vocab, pad/eos, image/video) from that
    processor's tokenizer, and the processor re-syncs its image/patch sizes from the model's config."""
    from ..families import load_family_model
    from ..families.processing import HFFamilyProcessor
    from ..families.specs import build_family_model as build_from_spec, load_family_spec

    attn = resolve_attn_implementation(cfg.model.attn_implementation)
    dtype = torch.bfloat16 if cfg.optim.bf16 else torch.float32
    if cfg.model.components():
        raise ConfigError(f"model.{', model.'.join(cfg.model.components())}: pretrained LLaVA-fork components do "
                          "not apply to a Hugging Face family model (start from a family model folder: model.init)")
    source = cfg.model.tokenizer or cfg.model.init
    if cfg.model.init:
        model = load_family_model(cfg.model.init, attn_implementation=attn, dtype=dtype)
    else:
        spec = load_family_spec(cfg.model.spec)
        processor = HFFamilyProcessor.from_pretrained(source, family=spec.family)
        model = build_from_spec(spec, **processor.config_token_ids()).to(dtype)
        model.config._attn_implementation = attn
    processor = HFFamilyProcessor.for_model(model, source, max_length=cfg.data.max_length)
    if model.config.get_text_config().vocab_size < len(processor.tokenizer):
        raise ValueError(f"model has vocab_size {model.config.get_text_config().vocab_size} but the tokenizer in "
                         f"{source} has {len(processor.tokenizer)} tokens: wrong processor for this model?")
    if cfg.mod is not None:
        apply_mod(model, cfg)
    return model, processor


def apply_mod(model, cfg: TrainConfig) -> None:
    """Convert to the `mod` section's layers, or check that an already-MoD `init` has exactly them."""
    layers = cfg.mod.resolve_layers(model.config.get_text_config().num_hidden_layers)
    # a plain Hugging Face family config has no `mod` section (its MoD twin's has)
    existing = model.config.mod_config() if hasattr(model.config, "mod_config") else None
    if existing is not None:  # a converted init: the recipe's section is a check, never silently ignored
        wanted = {"layers": layers, "skip_ratio": cfg.mod.skip_ratio, "strategy": cfg.mod.strategy,
                  "router_aux_loss_coef": cfg.mod.router_aux_loss_coef}
        found = {"layers": sorted(existing.mod_layers_idx), "skip_ratio": existing.skip_ratio,
                 "strategy": existing.strategy, "router_aux_loss_coef": existing.router_aux_loss_coef}
        diffs = [f"{k}: model {found[k]} vs mod section {v}" for k, v in wanted.items()
                 if v is not None and v != found[k]]
        if diffs:
            raise ValueError(
                f"model.init {cfg.model.init} is a MoD model that differs from the `mod` section ({'; '.join(diffs)}). "
                "Convert with the recipe's settings, or override them (an ARank-selected layer set: "
                "mod.dense_layers=null; no check at all: mod=null)")
        return
    if not layers:
        return
    if any(hasattr(p, "ds_id") for p in model.parameters()):
        raise ValueError("model.init was loaded partitioned (ZeRO-3), where MoD conversion is not supported: "
                         "convert first with `gamma-mod convert` and point model.init at its output")
    from ..mod.convert import convert_to_mod

    convert_to_mod(model, layers, skip_ratio=cfg.mod.skip_ratio, strategy=cfg.mod.strategy,
                   router_aux_loss_coef=cfg.mod.router_aux_loss_coef)


def apply_lora(model, cfg: TrainConfig):
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                      target_modules=cfg.lora.target_modules, modules_to_save=["mm_projector"], task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def build_family_dataset(cfg: TrainConfig, processor):
    """Records encoded by the family's processor (data/processor_dataset.py); the collator pads right."""
    from ..data.processor_dataset import ProcessorDataset

    dataset = ProcessorDataset(cfg.data.train_json, cfg.data.image_folder or Path(cfg.data.train_json).parent,
                               processor, cfg.data.on_bad_record)
    if len(dataset) == 0:
        raise DataError("no usable records", "no usable records", source=cfg.data.train_json)
    return dataset, processor.collate


def build_dataset(cfg: TrainConfig, tokenizer, model):
    from ..data.arrow import ArrowSupervisedDataset
    from ..data.processor import get_processor

    processor = get_processor(model, tokenizer=tokenizer, template=cfg.data.template, max_length=cfg.data.max_length,
                              on_overlong=cfg.data.on_overlong)
    # Arrow-backed: tokenized once into a memory-mapped cache that every rank and DataLoader worker shares.
    dataset = ArrowSupervisedDataset.from_processor(cfg.data.train_json, cfg.data.image_folder, processor,
                                                    cfg.data.on_bad_record, num_proc=cfg.data.num_proc,
                                                    cache_dir=cfg.data.cache_dir)
    if len(dataset) == 0:
        raise DataError("no usable records", "no usable records", source=cfg.data.train_json)
    return dataset, processor  # the processor is the collator (right padding)


# -- loop -------------------------------------------------------------------------------------------
def check_inputs(cfg: TrainConfig) -> None:
    """Every check that needs no model: config values, model/tokenizer folders, data paths.

    Runs before anything is written, so a rejected run leaves no trace in its output folder.
    """
    if cfg.resume and cfg.overwrite:
        raise ConfigError("resume=true and overwrite=true contradict each other: resume continues the run in "
                          "output_dir, overwrite replaces it")
    out = Path(cfg.output_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output_dir {out} is a file, not a folder")
    if cfg.model.init:
        check_model_folder(cfg.model.init, what="model.init")
    else:
        try:
            resolve_config("model", cfg.model.spec)
        except FileNotFoundError as e:
            raise ConfigError(f"model.spec: {e}") from None
        from ..families.specs import is_family_spec

        if not is_family_spec(cfg.model.spec):
            check_pretrained_components(cfg)  # a real-size spec without its pretrained parts: say so first
    tokenizer = cfg.model.tokenizer or cfg.model.init or cfg.model.llm
    if not tokenizer:
        raise ConfigError("model.tokenizer is required when neither model.init nor model.llm is set")
    what = "model.tokenizer" if cfg.model.tokenizer else ("model.init" if cfg.model.init else "model.llm")
    check_tokenizer_folder(tokenizer, what=what)
    if cfg.mod is not None and cfg.mod.layers:
        if not 0.0 <= cfg.mod.skip_ratio < 1.0:
            raise ConfigError(f"mod.skip_ratio is the fraction of routable tokens skipped and must be in [0, 1), "
                              f"got {cfg.mod.skip_ratio}")
        try:
            ModConfig(mod_layers_idx=list(cfg.mod.layers), skip_ratio=cfg.mod.skip_ratio,
                      strategy=cfg.mod.strategy, router_aux_loss_coef=cfg.mod.router_aux_loss_coef)
        except ValueError as e:
            raise ConfigError(str(e).replace("mod.mod_layers_idx", "mod.layers")) from None
    if cfg.deepspeed and not Path(cfg.deepspeed).is_file():
        raise ConfigError(f"deepspeed: no DeepSpeed config file at {cfg.deepspeed}")
    if not Path(cfg.data.train_json).is_file():
        raise DataError("no such data file (data.train_json)", "missing file", source=cfg.data.train_json)
    if cfg.data.image_folder and not Path(cfg.data.image_folder).is_dir():
        raise DataError(f"data.image_folder {cfg.data.image_folder}: no such folder", "missing image folder")


def check_output_dir(cfg: TrainConfig) -> checkpoint.RunFolder:
    """What is in output_dir, and whether this run may write there (ConfigError when not)."""
    folder = checkpoint.RunFolder.inspect(cfg.output_dir)
    if cfg.overwrite or cfg.resume:
        return folder
    if folder.finished:
        raise ConfigError(f"output_dir {folder.path} holds a finished run ({COMPLETE}); it is never modified: "
                          f"set overwrite=true to replace it, or choose another output_dir")
    if folder.checkpoints:
        raise ConfigError(f"output_dir {folder.path} holds checkpoints of an unfinished run "
                          f"({folder.checkpoints[-1].name}): set resume=true to continue it, overwrite=true to "
                          f"start over")
    return folder


def prepare_output_dir(cfg: TrainConfig, folder: checkpoint.RunFolder) -> None:
    """The first write into output_dir (rank 0), once every input has been checked."""
    out = folder.path
    if cfg.overwrite and (folder.finished or folder.checkpoints):
        logger.warning("overwrite=true: replacing the %s run in %s", "finished" if folder.finished else "unfinished",
                       out)
        checkpoint.clear_run(out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "train_config.yaml")


def run_training(cfg: TrainConfig) -> Path:
    """Train `cfg` into `cfg.output_dir`; returns it.

    Every input (config, model folder, tokenizer, data: every record and image) is checked before the
    output folder is touched. A finished run (complete.json) is never modified: resume=true on it
    does nothing, a new run into it needs overwrite=true.
    """
    from ..data.tokenizer import load_tokenizer
    from .trainer import GammaTrainer

    out = Path(cfg.output_dir)
    if cfg.resume and not cfg.overwrite and (out / COMPLETE).is_file():
        step = checkpoint.RunFolder.inspect(out).completed_step()
        logger.info("resume=true: %s holds a finished run (step %s); nothing to do (a new run into it needs "
                    "overwrite=true)", out, step)
        return out
    check_inputs(cfg)  # includes the real-size refusal (check_pretrained_components), before anything slow
    family = training_family(cfg)
    folder = check_output_dir(cfg)
    try:
        args = training_arguments(cfg)  # first: under ZeRO-3 it must exist before the model is built
    except ValueError as e:  # TrainingArguments validates its values (scheduler name, precision, ...)
        raise ConfigError(f"training settings: {e}") from None
    if cfg.deepspeed:
        import deepspeed

        # ZeRO-3 partitions weights while from_pretrained builds the model; DeepSpeed's own process
        # group must exist by then (the Trainer would only create it later). gloo on CPU.
        deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo")
    set_seed(cfg.optim.seed)
    if family is None:
        tokenizer = load_tokenizer(cfg.model.tokenizer or cfg.model.init or cfg.model.llm)
        model = build_model(cfg, tokenizer)
    else:
        if cfg.lora.enable:
            raise ConfigError("lora.enable: LoRA training is implemented for the LLaVA fork only, not for "
                              f"{family} models")
        model, processor = build_family_model(cfg)
        tokenizer = processor.tokenizer
    set_trainable(model, cfg.trainable_groups())
    if cfg.lora.enable:
        model = apply_lora(model, cfg)
    if cfg.optim.gradient_checkpointing:
        model.enable_input_require_grads()
    if family is None:
        dataset, collator = build_dataset(cfg, tokenizer, model)
    else:
        dataset, collator = build_family_dataset(cfg, processor)
    with args.main_process_first(local=False, desc="preparing the output folder"):
        if args.process_index == 0:
            prepare_output_dir(cfg, folder)
    trainer = GammaTrainer(model=model, args=args, train_dataset=dataset, data_collator=collator,
                           collapse_patience=cfg.collapse_patience,
                           group_by_modality_length=cfg.optim.group_by_modality_length)
    trainer.add_callback(ConfigLogger(cfg, trainer))
    resume = checkpoint.last_checkpoint(out) if cfg.resume else None
    resumed_from = checkpoint.read_run_loss(resume) if resume else None
    if cfg.resume:
        logger.info("resuming from %s", resume if resume else "scratch (no complete checkpoint yet)")
    if resumed_from:
        trainer.loss_sum_before_resume = resumed_from[1]
    elif resume:
        logger.warning("%s has no %s (written by older versions): complete.json's train_loss will cover only the "
                       "steps after it", resume, checkpoint.RUN_LOSS)
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)

    if cfg.lora.enable:
        trainer.model = trainer.model.merge_and_unload()
        trainer.model_wrapped = trainer.model
    trainer.save_model(str(out))
    if trainer.is_world_process_zero():
        # a family folder carries its whole processor (tokenizer, image processor, chat template)
        (tokenizer if family is None else processor).save_pretrained(out)
        step = trainer.state.global_step
        train_loss = result.training_loss
        if resumed_from:
            # The Trainer's train_loss is the mean over this call's steps only.
            before_step, before_sum = resumed_from
            train_loss = (before_sum + result.training_loss * (step - before_step)) / max(step, 1)
        summary = {"global_step": step, "train_loss": train_loss, "log_history": trainer.state.log_history}
        checkpoint.clear_staging(out)
        write_run_report(out, trainer.state.log_history)
        (out / COMPLETE).write_text(json.dumps(summary, indent=1))  # last: marks the run finished
        print(f"TRAINING COMPLETE step={step} loss={train_loss:.6f} out={out}", flush=True)
    return out


def write_run_report(out: Path, log_history: list[dict]) -> None:
    """Training curves (PNG) and report.md into the run folder; a plotting failure never fails the run."""
    from ..eval.plots import write_training_report

    try:
        write_training_report(out, log_history)
    except Exception as e:  # the model is trained and saved: say what is missing, do not lose the run
        logger.warning("no training plots in %s: %s", out, e)


def main(argv: list[str] | None = None) -> int:
    """`python -m gamma_mod.train.train CONFIG [key=value ...]`; expected errors raise (see __main__)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    argv = [a for a in argv if not a.startswith("--local_rank") and not a.startswith("--local-rank")
            and a != "--debug"]
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
    # Launched directly by scripts/v1_5 (python, torchrun, deepspeed): the same error rule as `gamma-mod train`.
    raise SystemExit(report_errors("gamma-mod train", main, debug_enabled(sys.argv[1:])))
