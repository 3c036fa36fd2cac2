"""The whole gamma-MoD pipeline on a Hugging Face family's tiny twin (`gamma-mod pipeline --base qwen2_5_vl_tiny`).

    synthetic data (images, or with --video moving-shape clips) -> tiny processor folder (the family's own
    processor classes and chat template, a tokenizer covering the synthetic words) -> the plain family model
    from its spec (gamma_mod/configs/model/<family>_tiny.yaml, random init) -> dense SFT -> ARank + layer
    selection -> convert_family_to_mod -> MoD SFT and the same extra SFT for the dense baseline ->
    held-out accuracy (greedy generate + the synthetic scorer, per question type) and prefill speed ->
    the dense-vs-MoD table (gamma_mod.pipeline.format_report)

Differences from the LLaVA-fork pipeline (gamma_mod/pipeline.py), each for a reason:
- No separate stage-1 projector alignment: the family's whole model (vision encoder and projector included)
  trains in one dense SFT on the captions and the VQA training split together, which stands in for the
  pretraining a real checkpoint brings (the tiny LLM starts random, as in the fork pipeline, so ARank is
  measured after SFT). The adaptation runs (MoD and the dense baseline) train on the VQA split alone.
- No FastV / PDrop rows: the token pruners (gamma_mod/prune) run inside our fork's decoder only.
- Qwen images and video frames are resized to a fixed 4 x 4 grid of merged tokens (the tiny processor's
  min_pixels = max_pixels), so the three image slots (left / center / right) fall on distinct tokens.
Every step writes into `--out` and is skipped when its output is complete there (`--fresh` starts over).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .errors import ConfigError, UsageError

logger = logging.getLogger("gamma_mod.pipeline")

FAMILY_TRAIN_CONFIG = "family_sft_tiny"
# merged tokens per side of a Qwen-family image / video frame in the tiny pipeline
QWEN_TOKEN_GRID = 4


@dataclass
class FamilyData:
    """Where the synthetic set of a family run lives (image or video set: the same split files)."""

    root: Path
    media: Path  # the folder the records' image / video paths are relative to
    train: Path  # the VQA training split (ARank, adaptation SFT)
    test: Path
    chance_accuracy: float
    sft_train: Path  # captions + VQA: the first dense SFT


def _with_captions(root: Path, captions: Path, train: Path) -> Path:
    """captions + VQA records in one file (the first SFT's data). A tiny model trained from random weights on
    one-word VQA answers alone settles on each question type's answer prior without reading the image; the
    captions name every shape's colour, kind and slot, so the image must be read to predict them."""
    out = root / "sft_train.json"
    records = json.loads(captions.read_text()) + json.loads(train.read_text())
    out.write_text(json.dumps(records))
    return out


def family_spec_name(base: str) -> str:
    """The family spec `base` names (a built-in name or a YAML path); ConfigError when it is not a family spec."""
    from .families.specs import FamilySpecError, is_family_spec, load_family_spec
    from .packaged import resolve_config

    try:
        resolve_config("model", base)
        if not is_family_spec(base):
            raise ConfigError(f"--base {base}: not a Hugging Face family spec (no `family:`); the LLaVA-fork "
                              "pipeline takes --model")
        return load_family_spec(base).family
    except FileNotFoundError as e:
        raise ConfigError(f"--base: {e}") from None
    except FamilySpecError as e:
        raise ConfigError(f"--base: {e}") from None


def check_family_arguments(args: argparse.Namespace, family: str) -> None:
    from .families import get_family

    if args.video and not get_family(family).has_video:
        raise UsageError(f"--video: the {family} family takes no video input (video families: llava_onevision, "
                         "qwen2_5_vl, qwen3_vl)")
    if args.strategy != "gamma" and args.k_dense is not None:
        raise UsageError("--k-dense applies to the gamma strategy (ARank-selected layers) only")


def write_data(args: argparse.Namespace, out: Path) -> FamilyData:
    if args.video:
        from .data.synthetic_video import write_synthetic_video_dataset

        video = write_synthetic_video_dataset(out / "data_video", n_captions=args.captions, n_vqa_train=args.vqa_train,
                                              n_vqa_test=args.vqa_test, num_frames=args.frames, seed=args.seed)
        return FamilyData(video.root, video.root, video.stage2_train, video.stage2_test, video.chance_accuracy,
                          _with_captions(video.root, video.stage1, video.stage2_train))
    from .data.synthetic import write_synthetic_dataset

    data = write_synthetic_dataset(out / "data", n_captions=args.captions, n_vqa_train=args.vqa_train,
                                   n_vqa_test=args.vqa_test, seed=args.seed)
    return FamilyData(data.root, data.images, data.stage2_train, data.stage2_test, data.chance_accuracy,
                      _with_captions(data.root, data.stage1, data.stage2_train))


def write_processor(family: str, base: str, folder: Path) -> Path:
    """The tiny processor folder of `family` (families/processing.build_tiny_processor), synced with the spec's
    model config (image / patch sizes), Qwen inputs fixed at QWEN_TOKEN_GRID^2 merged tokens."""
    from .families.processing import HFFamilyProcessor, build_tiny_processor
    from .families.specs import build_family_config

    if (folder / "processor_config.json").is_file():
        return folder
    build_tiny_processor(family, folder)
    processor = HFFamilyProcessor.from_pretrained(folder, family=family)
    processor = HFFamilyProcessor.for_model(build_family_config(base, **processor.config_token_ids()), folder)
    if family in ("qwen2_5_vl", "qwen3_vl"):
        ip = processor.image_processor
        side = QWEN_TOKEN_GRID * ip.patch_size * ip.merge_size
        ip.size = {"shortest_edge": side * side, "longest_edge": side * side}
        ip.min_pixels = ip.max_pixels = side * side
    processor.save_pretrained(folder)
    return folder


def _done(folder: Path) -> bool:
    return (folder / "complete.json").exists() or (
        not (folder / "train_config.yaml").exists() and (folder / "config.json").exists()
        and any(folder.glob("*.safetensors")))


def train(out: Path, data: FamilyData, args: argparse.Namespace, *, spec: str | None = None,
          init: Path | None = None, processor: Path | None = None, extra: list[str] = (),
          train_json: Path | None = None) -> None:
    """One SFT run through gamma_mod.train (HF Trainer, the family's processor as dataset encoder and collator)."""
    from .config import load_config
    from .packaged import resolve_config
    from .train.args import TrainConfig
    from .train.train import run_training

    if _done(out):
        return
    overrides = [f"output_dir={out}", "resume=true", f"optim.seed={args.seed}",
                 f"data.train_json={train_json or data.train}",
                 f"data.image_folder={data.media}", f"optim.lr={args.lr}", f"optim.batch_size={args.batch_size}"]
    overrides += [f"model.init={init}", f"model.tokenizer={init}"] if init is not None else \
        ["model.init=null", f"model.spec={spec}", f"model.tokenizer={processor}"]
    if args.max_steps > 0:
        overrides.append(f"optim.max_steps={args.max_steps}")
    run_training(load_config(TrainConfig, resolve_config("train", FAMILY_TRAIN_CONFIG), overrides + list(extra)))


def family_processor(model, folder: Path):
    from .families.processing import HFFamilyProcessor

    return HFFamilyProcessor.for_model(model, folder)


def arank_and_select(sft: Path, data: FamilyData, out_json: Path, num_samples: int, k_dense: int) -> list[int]:
    from .arank.analyze import ARankResult, compute_arank, plot_arank
    from .arank.cli import build_loader
    from .arank.select import select_mod_layers
    from .families import load_family_model

    if out_json.exists():
        result = ARankResult.load_json(out_json)
    else:
        model = load_family_model(sft).eval()
        # `gamma-mod arank`'s loader: the family's processor, records in file order, bad ones skipped
        loader = build_loader(model, str(sft), str(data.train), str(data.media), "vicuna_v1", 4096, 8, num_samples)
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
    from .families import convert_family_to_mod, load_family_model

    model = load_family_model(source)
    convert_family_to_mod(model, layers, skip_ratio=ratio, strategy=strategy)
    model.save_pretrained(out)
    family_processor(model, source).save_pretrained(out)


def evaluate_pair(dense_dir: Path, mod_dir: Path, data: FamilyData, out: Path, eval_samples: int, strategy: str,
                  speed_repeats: int = 15):
    """Dense and MoD: held-out accuracy (per question type in the log), TFLOPs and prefill speed in one run."""
    from .eval.answer import feature_encoder, generate_answers
    from .eval.compare import compare_methods
    from .eval.scorers import synthetic
    from .eval.speed import SpeedInputs
    from .families import load_family_model
    from .pipeline import PipelineReport

    questions = synthetic.read_questions(data.test, data.media)[:eval_samples]
    models, processors, prompts = {}, {}, {}
    for name, folder in {"dense": dense_dir, f"MoD ({strategy})": mod_dir}.items():
        models[name] = load_family_model(folder).eval()
        processors[name] = family_processor(models[name], folder)
        encode = feature_encoder(processors[name])  # images or video, as the questions have them
        prompts[name] = SpeedInputs.from_batch(processors[name].collate([encode(q) for q in questions[:16]],
                                                                        padding_side="left"))
    metrics_by_name = {}

    def answer(name: str, model) -> float:
        processor = processors[name]
        answers = out / "eval" / f"{name.split()[0].lower()}_{strategy}.jsonl"
        answers.unlink(missing_ok=True)
        generate_answers(model, questions, feature_encoder(processor), processor.tokenizer, answers, batch_size=16,
                         max_new_tokens=4, collate=processor.collate)
        metrics = synthetic.score(answers, data.test)
        metrics_by_name[name] = metrics
        logger.info("%s: %s", name, metrics)
        return metrics["accuracy"]

    rows = [PipelineReport(name=r.name, accuracy=r.accuracy, prefill_samples_per_s=r.prefill_samples_per_s,
                           skipped_fraction=r.skipped, mod_layers=r.layers, tflops=r.tflops)
            for r in compare_methods(models, answer, prompts, repeats=speed_repeats)]
    return rows, metrics_by_name


def run(args: argparse.Namespace) -> int:
    from .pipeline import format_report, step

    family = family_spec_name(args.base)
    check_family_arguments(args, family)
    out = Path(args.out)
    if args.fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    timings: dict[str, float] = {}

    t = step(f"0/6 synthetic {'video' if args.video else 'image'} data and the tiny {family} processor")
    data = write_data(args, out)
    processor = write_processor(family, args.base, out / "processor")
    timings["data"] = time.perf_counter() - t

    t = step(f"1/6 dense SFT of {args.base} on captions + VQA (random init; vision encoder, projector, LLM train)")
    sft = out / "stage2_sft"
    train(sft, data, args, spec=args.base, processor=processor, extra=[f"optim.epochs={args.epochs}"],
          train_json=data.sft_train)
    timings["sft"] = time.perf_counter() - t

    n_layers = json.loads((sft / "config.json").read_text())
    n_layers = (n_layers.get("text_config") or n_layers)["num_hidden_layers"]
    if args.strategy == "gamma":
        t = step("2/6 ARank of the SFT model and layer selection")
        k_dense = args.k_dense if args.k_dense is not None else max(2, round(4 * n_layers / 32))
        mod_layers = arank_and_select(sft, data, out / "arank.json", args.arank_samples, k_dense)
        timings["arank"] = time.perf_counter() - t
    else:
        step("2/6 p-MoD: progressive ratio decay picks the layers (no ARank pass)")
        mod_layers = None

    t = step(f"3/6 convert to MoD ({args.strategy}, skip ratio {args.skip_ratio})")
    converted = out / f"converted_{args.strategy}"
    if not _done(converted):
        convert_folder(sft, converted, mod_layers, args.skip_ratio, args.strategy)
    timings["convert"] = time.perf_counter() - t

    t = step(f"4/6 MoD SFT and the same extra SFT for the dense baseline ({args.adapt_epochs} epoch)")
    stage2_mod, stage2_dense = out / f"stage2_{args.strategy}", out / "stage2_dense"
    train(stage2_mod, data, args, init=converted, extra=[f"optim.epochs={args.adapt_epochs}"])
    train(stage2_dense, data, args, init=sft, extra=[f"optim.epochs={args.adapt_epochs}"])
    timings["adapt"] = time.perf_counter() - t

    t = step("5/6 evaluation: held-out synthetic accuracy and prefill speed")
    rows, metrics = evaluate_pair(stage2_dense, stage2_mod, data, out, args.eval_samples, args.strategy,
                                  args.speed_repeats)
    timings["eval"] = time.perf_counter() - t

    step("6/6 report")
    table = format_report(rows, data.chance_accuracy)
    per_type = "\n".join(f"- {name}: " + ", ".join(f"{k.split('/')[-1]} {100 * v:.1f}%" for k, v in m.items()
                                                   if k.startswith("accuracy"))
                         + f" ({m['answered']} questions)" for name, m in metrics.items())
    header = f"{args.base} ({family}, {'video' if args.video else 'images'})"
    print(f"{header}\n{table}\n{per_type}")
    (out / f"report_{args.strategy}.md").write_text(f"{header}\n\n{table}\n\nper question type:\n{per_type}\n")
    (out / f"report_{args.strategy}.json").write_text(json.dumps(
        {"base": args.base, "family": family, "video": args.video, "rows": [asdict(r) for r in rows],
         "per_type": metrics, "chance_accuracy": data.chance_accuracy, "timings_s": timings}, indent=2))
    try:
        from .eval.plots import write_pipeline_report

        tables = {args.strategy: (out / f"report_{args.strategy}.md").read_text()}
        stages = [s for s in ("stage2_sft", f"stage2_{args.strategy}", "stage2_dense") if (out / s).is_dir()]
        write_pipeline_report(out, tables, stages, arank_png="arank.png")
    except ImportError as e:
        logger.info("no report plots: %s", e)
    logger.info("pipeline done in %.0f s (%s); report in %s", sum(timings.values()),
                ", ".join(f"{k} {v:.0f}s" for k, v in timings.items()), out / f"report_{args.strategy}.md")
    return 0
