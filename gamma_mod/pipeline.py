"""The whole gamma-MoD pipeline on the embedded default (`gamma-mod pipeline`, README command 1).
(`gamma-mod pipeline --base <family>_tiny [--video]`: the same on a Hugging Face family, gamma_mod/family_pipeline.py.)

    synthetic data -> stage 1 (projector) -> stage-2 dense SFT -> ARank -> select + convert
    -> MoD SFT (adaptation) and, for a fair baseline, the same extra SFT of the dense model
    -> held-out VQA accuracy + prefill speed -> one table, with training-free FastV and PDrop rows
       (the dense model's own weights with a token pruner, gamma_mod/prune), and an image-blind row: the
       dense recipe trained and asked without images (gamma_mod/pipeline_baselines.py)
    --seeds N: all of it once per seed, one mean ± spread table (gamma_mod/pipeline_seeds.py)

The paper converts a model whose LLM is pretrained (Vicuna); the tiny default's LLM starts random,
so its first SFT epochs stand in for that pretraining: ARank is measured on the SFT model (on a
random LLM every attention map is full rank and ARank says nothing), and the MoD model and the
dense baseline then receive the same further training. Every step writes into `--out` (default
runs/quickstart) and is skipped when its output is complete there, so an interrupted run continues
where it stopped (`--fresh` starts over).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .errors import ConfigError, UsageError
from .mod.strategies import ROUTING_STRATEGIES
from .packaged import resolve_config

logger = logging.getLogger("gamma_mod.pipeline")


@dataclass
class PipelineReport:
    name: str
    accuracy: float
    prefill_samples_per_s: float
    skipped_fraction: float  # MoD: of routable tokens, mean over MoD layers; pruners: of image tokens
    mod_layers: list[int]  # the layers that skip tokens (MoD layers, or the layers after a pruner's first drop)
    tflops: float = 0.0  # prefill TFLOPs per sample, paper convention with the measured token counts
    accuracy_by_type: dict[str, float] = field(default_factory=dict)  # question type -> accuracy
    decode_tokens_per_s: float = math.nan  # greedy steps over the KV cache, models timed in turn


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/quickstart", help="run folder (resumable)")
    parser.add_argument("--strategy", default="gamma", choices=list(ROUTING_STRATEGIES), help="routing strategy")
    parser.add_argument("--skip-ratio", "--routing-ratio", dest="skip_ratio", type=float, default=0.5,
                        help="fraction of routable tokens skipped (--routing-ratio is the old name)")
    parser.add_argument("--k-dense", type=int, default=None,
                        help="dense layers: first, last, then the highest ARank (default: the paper's 4 of 32 "
                             "scaled to the model's depth, at least 2)")
    parser.add_argument("--model", default="tiny", help="built-in model spec name (gamma_mod/configs/model/) or a YAML path")
    parser.add_argument("--stage1-config", default="stage1_tiny")
    parser.add_argument("--stage2-config", default="stage2_tiny")
    parser.add_argument("--adapt-epochs", type=float, default=1.0, help="MoD SFT epochs (the dense baseline gets the same)")
    parser.add_argument("--arank-samples", type=int, default=32)
    parser.add_argument("--eval-samples", type=int, default=600, help="held-out questions to answer (600 = all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", default=None, metavar="N|S1,S2,...",
                        help="run the whole pipeline per seed (N: seeds --seed .. --seed+N-1; or a comma list) into "
                             "--out/seed_<s> and print mean ± spread per row (default: the one --seed, into --out)")
    parser.add_argument("--no-text-only", action="store_true",
                        help="no image-blind baseline row (the same SFT recipe on the records without images)")
    parser.add_argument("--captions", type=int, default=1500,
                        help="synthetic stage-1 captions (with --base: captions in the first SFT's data)")
    parser.add_argument("--vqa-train", type=int, default=1000, help="synthetic training images (3 questions each)")
    parser.add_argument("--vqa-test", type=int, default=200, help="synthetic held-out images (3 questions each)")
    parser.add_argument("--max-steps", type=int, default=-1, help="cap every training stage (smoke runs)")
    parser.add_argument("--fresh", action="store_true", help="delete --out first")
    parser.add_argument("--prune", action="append", default=None, metavar="SPEC",
                        help="a training-free pruner row on the dense model (gamma_mod.prune), repeatable; default: "
                             "fastv:K=2,R=0.5 and PDrop at the paper's layers 8/16/24 of 32 scaled to depth, lambda 0.5")
    parser.add_argument("--no-prune", action="store_true", help="no pruner rows")
    family = parser.add_argument_group(
        "Hugging Face families", "--base <family>_tiny runs the pipeline on a family's tiny twin "
        "(gamma_mod/family_pipeline.py): llava_hf_tiny, llava_onevision_tiny, qwen2_5_vl_tiny, qwen3_vl_tiny")
    family.add_argument("--base", default=None, help="a family spec (built-in name or YAML); default: the LLaVA fork")
    family.add_argument("--video", action="store_true", help="with --base: the synthetic video set (moving shapes)")
    family.add_argument("--frames", type=int, default=4, help="frames per synthetic clip (--video)")
    family.add_argument("--epochs", type=float, default=None, help="with --base: dense SFT epochs (default 6)")
    family.add_argument("--lr", type=float, default=None, help="with --base: learning rate (default 2e-3)")
    family.add_argument("--batch-size", type=int, default=None, help="with --base: batch size (default 16)")
    family.add_argument("--speed-repeats", type=int, default=15,
                        help="with --base: timed prefill rounds per model (alternating, median)")


def default_pruners(num_layers: int) -> list[str]:
    """FastV's K=2 R=0.5, and PDrop's 8/16/24 of 32 layers (lambda 0.5) scaled to this depth."""
    layers = sorted({max(1, min(num_layers - 1, round(l * num_layers / 32))) for l in (8, 16, 24)})
    return ["fastv:K=2,R=0.5", f"pdrop:layers={','.join(map(str, layers))},lambda=0.5"]


def _done(folder: Path) -> bool:
    """A training/convert output that finished (training writes complete.json last)."""
    if (folder / "train_config.yaml").exists():
        return (folder / "complete.json").exists()
    return (folder / "config.json").exists() and any(folder.glob("*.safetensors"))


def step(title: str):
    logger.info("==== %s ====", title)
    return time.perf_counter()


def check_arguments(args: argparse.Namespace) -> None:
    """Every flag, before the run folder is created or touched."""
    if not 0.0 <= args.skip_ratio < 1.0:
        raise UsageError(f"--skip-ratio is the fraction of routable tokens skipped and must be in [0, 1), "
                         f"got {args.skip_ratio}")
    if args.k_dense is not None and args.k_dense < 2:
        raise UsageError(f"--k-dense must be >= 2 (the first and the last layer stay dense), got {args.k_dense}")
    for flag in ("arank_samples", "eval_samples", "captions", "vqa_train", "vqa_test"):
        if getattr(args, flag) < 1:
            raise UsageError(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    if args.adapt_epochs <= 0:
        raise UsageError(f"--adapt-epochs must be > 0, got {args.adapt_epochs}")
    if args.max_steps == 0 or args.max_steps < -1:
        raise UsageError(f"--max-steps must be >= 1 (or -1: no cap), got {args.max_steps}")
    for flag, kind, name in (("--model", "model", args.model), ("--stage1-config", "train", args.stage1_config),
                             ("--stage2-config", "train", args.stage2_config)):
        try:
            resolve_config(kind, name)
        except FileNotFoundError as e:
            raise ConfigError(f"{flag}: {e}") from None
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder")
    family_flags = [f for f, on in (("--video", args.video), ("--epochs", args.epochs is not None),
                                    ("--lr", args.lr is not None), ("--batch-size", args.batch_size is not None)) if on]
    if args.base is None and family_flags:
        raise UsageError(f"{', '.join(family_flags)}: only with --base <family spec> (the LLaVA-fork pipeline "
                         "takes its training settings from --stage1-config / --stage2-config)")
    if args.base is not None:
        for flag, value in (("--epochs", args.epochs), ("--lr", args.lr), ("--batch-size", args.batch_size)):
            if value is not None and value <= 0:
                raise UsageError(f"{flag} must be > 0, got {value}")
        if args.speed_repeats < 1:
            raise UsageError(f"--speed-repeats must be >= 1, got {args.speed_repeats}")
        if args.frames < 2:
            raise UsageError(f"--frames must be >= 2 (motion needs two frames), got {args.frames}")


def run(args: argparse.Namespace) -> int:
    from .data.synthetic import write_synthetic_dataset
    from .pipeline_seeds import parse_seeds, run_seeds

    check_arguments(args)
    if args.base is not None:
        from . import family_pipeline

        if getattr(args, "seeds", None) is not None:
            raise UsageError("--seeds runs the embedded default's pipeline; with --base run one --seed per call")
        args.epochs = 6.0 if args.epochs is None else args.epochs
        args.lr = 2e-3 if args.lr is None else args.lr
        args.batch_size = 16 if args.batch_size is None else args.batch_size
        return family_pipeline.run(args)
    if getattr(args, "seeds", None) is not None:
        return run_seeds(args, parse_seeds(args.seeds, args.seed), run)
    out = Path(args.out)
    if args.fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    timings: dict[str, float] = {}

    t = step("0/6 synthetic data")
    data = write_synthetic_dataset(out / "data", n_captions=args.captions, n_vqa_train=args.vqa_train,
                                   n_vqa_test=args.vqa_test, seed=args.seed)
    cap = [f"optim.max_steps={args.max_steps}"] if args.max_steps > 0 else []
    timings["data"] = time.perf_counter() - t

    t = step("1/6 stage 1: projector alignment (LLM and vision tower frozen)")
    stage1 = out / "stage1"
    if not _done(stage1):
        train_stage(args.stage1_config, stage1, data, stage="pretrain", model=args.model, seed=args.seed, extra=cap)
    timings["stage1"] = time.perf_counter() - t

    t = step("2/6 stage 2: dense SFT (the trained model to make MoD)")
    sft = out / "stage2_sft"
    if not _done(sft):
        train_stage(args.stage2_config, sft, data, stage="finetune", init=stage1, seed=args.seed, extra=cap)
    timings["stage2"] = time.perf_counter() - t

    if args.strategy == "gamma":
        t = step("3/6 ARank of the SFT model and layer selection")
        n_layers = json.loads((sft / "config.json").read_text())["num_hidden_layers"]
        # The paper keeps 4 of 32 layers dense; scaled to this depth, never fewer than first + last.
        k_dense = args.k_dense if args.k_dense is not None else max(2, round(4 * n_layers / 32))
        mod_layers = arank_and_select(sft, data, out / "arank.json", args.arank_samples, k_dense)
        timings["arank"] = time.perf_counter() - t
    else:
        step("3/6 p-MoD: progressive ratio decay picks the layers (no ARank pass)")
        mod_layers = None

    t = step(f"4/6 convert to MoD ({args.strategy}, skip ratio {args.skip_ratio})")
    converted = out / f"converted_{args.strategy}"
    if not _done(converted):
        convert_folder(sft, converted, mod_layers, args.skip_ratio, args.strategy)
    timings["convert"] = time.perf_counter() - t

    t = step(f"5/6 MoD SFT and the same extra SFT for the dense baseline ({args.adapt_epochs} epoch)")
    stage2_mod = out / f"stage2_{args.strategy}"
    stage2_dense = out / "stage2_dense"
    extra = [f"optim.epochs={args.adapt_epochs}", *cap]
    if not _done(stage2_mod):
        train_stage(args.stage2_config, stage2_mod, data, stage="finetune", init=converted, seed=args.seed, extra=extra)
    if not _done(stage2_dense):
        train_stage(args.stage2_config, stage2_dense, data, stage="finetune", init=sft, seed=args.seed, extra=extra)
    timings["adapt"] = time.perf_counter() - t

    blind = None
    if not getattr(args, "no_text_only", False):
        from .pipeline_baselines import train_text_only

        t = step("5b/6 text-only baseline: the same SFT recipe on the records without images")
        blind = train_text_only(args, data, out, stage1, cap)
        timings["text_only"] = time.perf_counter() - t

    t = step("6/6 evaluation: held-out synthetic VQA accuracy and prefill speed")
    n_layers = json.loads((stage2_dense / "config.json").read_text())["num_hidden_layers"]
    pruners = [] if args.no_prune else (args.prune or default_pruners(n_layers))
    rows = evaluate_pair(stage2_dense, stage2_mod, data, out, args.eval_samples, args.strategy, pruners)
    if blind is not None:
        from .pipeline_baselines import evaluate_text_only

        rows.append(evaluate_text_only(blind, data, out, args.eval_samples))
    timings["eval"] = time.perf_counter() - t

    from .eval.quickstart_table import row_metrics

    table = format_report(rows, data.chance_accuracy)
    print(table)
    (out / f"report_{args.strategy}.md").write_text(table + "\n")
    write_summary(out)
    (out / f"report_{args.strategy}.json").write_text(json.dumps(
        {"rows": [asdict(r) for r in rows], "metrics": row_metrics(rows), "chance_accuracy": data.chance_accuracy,
         "timings_s": timings}, indent=2))
    logger.info("pipeline done in %.0f s (%s); report in %s", sum(timings.values()),
                ", ".join(f"{k} {v:.0f}s" for k, v in timings.items()), out / f"report_{args.strategy}.md")
    return 0


def write_summary(out: Path) -> None:
    """report.md in the run folder: ARank plot, every strategy's table so far, the stages' training curves."""
    from .eval.plots import write_pipeline_report

    tables = {s: (out / f"report_{s}.md").read_text() for s in ("gamma", "pmod") if (out / f"report_{s}.md").is_file()}
    stages = ["stage1", "stage2_sft", "stage2_gamma", "stage2_pmod", "stage2_dense"]
    path = write_pipeline_report(out, tables, [s for s in stages if (out / s).is_dir()], arank_png="arank.png")
    logger.info("summary with plots: %s", path)


def format_report(rows: list[PipelineReport], chance: float) -> str:
    """One seed's table (gamma_mod/eval/quickstart_table.py; several seeds: gamma_mod/pipeline_seeds.py)."""
    from .eval.quickstart_table import format_table, row_metrics

    return format_table(row_metrics(rows), chance)


# -- steps ------------------------------------------------------------------------------------------
def train_stage(config_name: str, out: Path, data, stage: str, model: str | None = None, init: Path | None = None,
                seed: int = 0, extra: list[str] = ()) -> None:
    from .config import load_config
    from .train.args import TrainConfig
    from .train.train import run_training

    # resume=true: a stage interrupted after a checkpoint continues from it (a stage never trained starts fresh).
    overrides = [f"output_dir={out}", "resume=true", f"stage={stage}", f"optim.seed={seed}",
                 f"data.image_folder={data.images}",
                 f"data.train_json={data.stage1 if stage == 'pretrain' else data.stage2_train}"]
    if init is not None:
        overrides += [f"model.init={init}", f"model.tokenizer={init}"]
    else:
        overrides += ["model.init=null", f"model.tokenizer={data.tokenizer}"]
        if model:
            overrides.append(f"model.spec={model}")
    overrides += list(extra)
    run_training(load_config(TrainConfig, resolve_config("train", config_name), overrides))


def _loader(model_dir: Path, json_path: Path, images: Path, batch_size: int):
    from .arank.cli import load_batches

    return load_batches(str(model_dir), str(json_path), str(images), "vicuna_v1", 4096, batch_size)


def arank_and_select(stage1: Path, data, out_json: Path, num_samples: int, k_dense: int) -> list[int]:
    from .arank.analyze import ARankResult, compute_arank, plot_arank
    from .arank.select import select_mod_layers

    if out_json.exists():
        result = ARankResult.load_json(out_json)
    else:
        model, loader = _loader(stage1, data.stage2_train, data.images, 8)
        result = compute_arank(model, loader, num_samples)
        result.save_json(out_json)
    layers = select_mod_layers(result.mean, k_dense=k_dense)
    try:
        plot_arank(result, out_json.with_suffix(".png"), layers)
    except ImportError as e:
        logger.info("no ARank plot: %s", e)
    logger.info("ARank per layer: %s -> MoD layers %s", [round(v, 1) for v in result.mean], layers)
    return layers


def convert_folder(source: Path, out: Path, layers: list[int] | None, ratio: float, strategy: str) -> None:
    from .model import LlavaLlamaForCausalLM
    from .mod.convert import convert_to_mod

    model = LlavaLlamaForCausalLM.from_pretrained(source)
    convert_to_mod(model, layers, skip_ratio=ratio, strategy=strategy)
    model.save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (source / name).exists():
            shutil.copy2(source / name, out / name)


def evaluate_pair(dense_dir: Path, mod_dir: Path, data, out: Path, eval_samples: int, strategy: str,
                  pruners: list[str] = ()) -> list[PipelineReport]:
    """Dense, MoD and each pruner on the dense weights: accuracy, TFLOPs and prefill speed in one run."""
    from .data.processor import get_processor
    from .eval.answer import generate_answers, question_encoder
    from .eval.compare import compare_methods
    from .eval.decode import alternating_decode_rates
    from .eval.scorers import synthetic
    from .eval.speed import question_inputs
    from .model import LlavaLlamaForCausalLM
    from .prune.view import with_pruner

    questions = synthetic.read_questions(data.stage2_test, data.images)[:eval_samples]
    names = {"dense": dense_dir, f"MoD ({strategy})": mod_dir}
    models, encoders, prompts = {}, {}, {}
    for name, folder in names.items():
        model = LlavaLlamaForCausalLM.from_pretrained(folder).eval()
        processor = get_processor(folder, template="vicuna_v1")  # the one prompt + image encoder
        models[name] = model
        encoders[name] = (question_encoder(processor), processor.tokenizer, folder.name)
        prompts[name] = question_inputs(processor, questions[:32])
    for spec in pruners:  # training-free: the dense weights with a pruner
        view = with_pruner(models["dense"], spec)
        name = view.model.pruner.describe()
        models[name], prompts[name] = view, prompts["dense"]
        encode, tokenizer, _ = encoders["dense"]
        encoders[name] = (encode, tokenizer, f"{dense_dir.name}_{name.replace(' ', '_').replace('=', '')}")

    by_type: dict[str, dict[str, float]] = {}

    def answer(name: str, model) -> float:
        encode, tokenizer, stem = encoders[name]
        answers = out / "eval" / f"{stem}.jsonl"
        answers.unlink(missing_ok=True)
        generate_answers(model, questions, encode, tokenizer, answers, batch_size=16, max_new_tokens=3)
        metrics = synthetic.score(answers, data.stage2_test)
        logger.info("%s: %s", name, metrics)
        by_type[name] = {k.split("/", 1)[1]: v for k, v in metrics.items() if k.startswith("accuracy/")}
        return metrics["accuracy"]

    results = compare_methods(models, answer, prompts)
    decode = alternating_decode_rates(models, prompts)
    return [PipelineReport(name=r.name, accuracy=r.accuracy, prefill_samples_per_s=r.prefill_samples_per_s,
                           skipped_fraction=r.skipped, mod_layers=r.layers, tflops=r.tflops,
                           accuracy_by_type=by_type[r.name], decode_tokens_per_s=decode[r.name])
            for r in results]
