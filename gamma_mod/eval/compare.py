"""`gamma-mod compare`: accuracy vs analytic TFLOPs of dense, MoD and token pruners, one base, one run.

    gamma-mod compare --base DENSE [--mod GAMMA_MOD ...] [--pmod P_MOD ...] --data DIR [--benchmark synthetic] \\
        [--fastv K=2,R=0.5 ...] [--pdrop layers=8,16,24,lambda=0.5 ...] [--out DIR]

Every method answers the same questions (the one answer loop, the benchmark's own scorer) and runs
the same prefill prompts. Dense is `--base`; every FastV / PDrop setting is the SAME weights with a
pruner (gamma_mod/prune/view.py, nothing copied); MoD rows are their own folders, trained from the
base. Per method:
  accuracy        the benchmark's metric ("accuracy", else its first number)
  TFLOPs/sample   the paper convention (eval/flops.py) with each layer's token count as measured in
                  the prefill of the speed prompts (pruned tokens, MoD skips), per sample, averaged
  prefill         samples/s of the speed prompts, every method timed in turn within each repeat
                  (median), so a change of machine load hits all alike
  KV cache        MB per sample after prefill
Outputs in --out: compare.md (the table), compare.json, compare.png (accuracy vs TFLOPs, needs
matplotlib) and the answer files.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

logger = logging.getLogger(__name__)


@dataclass
class MethodResult:
    name: str
    accuracy: float
    tflops: float  # per sample, prefill
    prefill_samples_per_s: float
    kv_cache_mb: float  # per sample, after prefill
    # MoD: skipped of routable (mean over MoD layers); pruners: dropped of image tokens (mean over pruned layers)
    skipped: float
    layers: list[int]  # MoD layers, or the layers that run without the dropped tokens


# -- measuring ------------------------------------------------------------------------------------
@torch.no_grad()
def prefill_profile(model, inputs) -> tuple[float, float, float, list[int]]:
    """(TFLOPs per sample, KV cache MB per sample, skipped fraction, layers that skip) of one prefill."""
    from .flops import decoder_shape, measured_layer_tokens, per_sample_tflops
    from .speed import outputs_cache, kv_cache_bytes

    kwargs = dict(inputs.model_kwargs(model), use_cache=True)
    mask = kwargs["attention_mask"]
    config = model.config
    if hasattr(model, "mod_context_holder"):  # a Hugging Face family model's MoD twin
        out = model(**kwargs, logits_to_keep=1)
        mod_stats, prune = model.last_routing_stats.layer_stats, None
    elif not hasattr(model.model, "last_prune_stats"):  # a plain Hugging Face family model: no routing
        out = model(**kwargs, logits_to_keep=1)
        mod_stats, prune = {}, None
    else:
        out = model.model(**kwargs)
        mod_stats = out.mod_context.stats if out.mod_context is not None else {}
        prune = model.model.last_prune_stats
    tokens = measured_layer_tokens(mask, config.get_text_config().num_hidden_layers, prune, mod_stats)
    shape = decoder_shape(config)
    tflops = float(per_sample_tflops(tokens, shape.hidden, shape.ffn, q_dim=shape.q_dim, kv_dim=shape.kv_dim).mean())
    kv_mb = kv_cache_bytes(outputs_cache(out)) / 2**20 / mask.shape[0]
    if mod_stats:
        fractions = [s.skipped / s.routable for s in mod_stats.values() if s.routable]
        return tflops, kv_mb, (statistics.mean(fractions) if fractions else 0.0), sorted(mod_stats)
    if prune is not None and prune.kept_image:
        image = prune.image_tokens.sum().item()
        stages = sorted(prune.kept_image)  # the layers where a stage dropped
        layers = list(range(stages[0], config.get_text_config().num_hidden_layers))
        dropped = []
        for layer in layers:
            kept = prune.kept_image[max(s for s in stages if s <= layer)].sum().item()
            dropped.append(1 - kept / image if image else 0.0)
        return tflops, kv_mb, statistics.mean(dropped), layers
    return tflops, kv_mb, 0.0, []


def compare_methods(models: dict[str, torch.nn.Module], answer: Callable[[str, torch.nn.Module], float],
                    speed_inputs: dict, repeats: int = 15) -> list[MethodResult]:
    """Accuracy (`answer(name, model)`), TFLOPs, KV cache and prefill speed of every method; the first is dense."""
    from .speed import alternating_prefill_times

    profiles, accuracy = {}, {}
    for name, model in models.items():
        model.eval()
        accuracy[name] = answer(name, model)
        profiles[name] = prefill_profile(model, speed_inputs[name])
        logger.info("%s: accuracy %.4f, %.4g TFLOPs/sample", name, accuracy[name], profiles[name][0])
    seconds = alternating_prefill_times(models, speed_inputs, repeats=repeats)
    rows = []
    for name in models:
        tflops, kv_mb, skipped, layers = profiles[name]
        batch = speed_inputs[name].input_ids.shape[0]
        rows.append(MethodResult(name=name, accuracy=accuracy[name], tflops=tflops,
                                 prefill_samples_per_s=batch / seconds[name], kv_cache_mb=kv_mb, skipped=skipped,
                                 layers=layers))
    return rows


# -- reporting ------------------------------------------------------------------------------------
def format_table(rows: Sequence[MethodResult], spread: dict[str, dict[str, float]] | None = None) -> str:
    """Markdown table; dense (the first row) is the reference. `spread`: name -> {field: std} over seeds."""
    dense = rows[0]

    def pm(row, field, scale=1.0, fmt=".1f"):
        value = f"{scale * getattr(row, field):{fmt}}"
        if spread and field in spread.get(row.name, {}):
            value += f" ± {scale * spread[row.name][field]:{fmt}}"
        return value

    lines = ["| method | accuracy | TFLOPs/sample | TFLOPs vs dense | prefill samples/s | prefill speed-up | "
             "KV cache MB/sample | skipped | layers skipping |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r.name} | {pm(r, 'accuracy', 100)}% | {r.tflops:.4g} | {r.tflops / dense.tflops:.3f} | "
            f"{pm(r, 'prefill_samples_per_s')} | {r.prefill_samples_per_s / dense.prefill_samples_per_s:.2f}x | "
            f"{r.kv_cache_mb:.3f} | {100 * r.skipped:.1f}% | {_layer_span(r.layers)} |")
    return "\n".join(lines)


def _layer_span(layers: list[int]) -> str:
    if not layers:
        return "-"
    if layers == list(range(layers[0], layers[-1] + 1)) and len(layers) > 2:
        return f"{layers[0]}-{layers[-1]}"
    return ",".join(map(str, layers))


def plot_comparison(rows: Sequence[MethodResult], path: Path, title: str = "",
                    spread: dict[str, dict[str, float]] | None = None) -> Path:
    """Accuracy vs TFLOPs per sample, one labelled point per method (error bars: `spread` accuracy std)."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: works without a display
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ImportError("the comparison plot needs matplotlib: pip install matplotlib (or 'gamma-mod[plot]')") from e
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        kind = "dense" if r is rows[0] else "MoD" if "MoD" in r.name else "pruner"
        style = {"dense": ("k", "s"), "MoD": ("tab:blue", "o"), "pruner": ("tab:orange", "^")}[kind]
        err = 100 * spread[r.name]["accuracy"] if spread and r.name in spread else None
        ax.errorbar(r.tflops, 100 * r.accuracy, yerr=err, color=style[0], marker=style[1], capsize=3, linestyle="")
        ax.annotate(r.name, (r.tflops, 100 * r.accuracy), textcoords="offset points", xytext=(5, 4), fontsize=7)
    ax.set_xlabel("prefill TFLOPs per sample (LLM decoder, paper convention)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title or "accuracy vs TFLOPs")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def aggregate(runs: Sequence[Sequence[MethodResult]]) -> tuple[list[MethodResult], dict[str, dict[str, float]]]:
    """Mean over runs (seeds) per method, and the standard deviation of accuracy and prefill speed."""
    names = [r.name for r in runs[0]]
    by_name = {name: [next(r for r in run if r.name == name) for run in runs] for name in names}
    means, spread = [], {}
    for name, results in by_name.items():
        mean = {f: statistics.mean(getattr(r, f) for r in results)
                for f in ("accuracy", "tflops", "prefill_samples_per_s", "kv_cache_mb", "skipped")}
        means.append(MethodResult(name=name, layers=results[0].layers, **mean))
        if len(results) > 1:
            spread[name] = {f: statistics.stdev(getattr(r, f) for r in results)
                            for f in ("accuracy", "prefill_samples_per_s")}
    return means, spread


# -- the command ----------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base", required=True, help="dense model folder: the reference and the pruners' weights")
    parser.add_argument("--mod", action="append", default=[], help="a gamma-MoD model folder trained from --base; repeatable")
    parser.add_argument("--pmod", action="append", default=[], help="a p-MoD model folder trained from --base; repeatable")
    parser.add_argument("--data", required=True, help="the benchmark's data folder (synthetic: the dataset folder)")
    parser.add_argument("--benchmark", default="synthetic", help="a benchmark with a local scorer (default synthetic)")
    parser.add_argument("--fastv", action="append", default=[], metavar="K=..,R=..",
                        help="a FastV setting, e.g. K=2,R=0.5 (optional query=last|instruction|text); repeatable")
    parser.add_argument("--pdrop", action="append", default=[], metavar="layers=..,lambda=..",
                        help="a PDrop setting, e.g. layers=8,16,24,lambda=0.5; repeatable")
    parser.add_argument("--out", default=None, help="default: <base>/compare/<benchmark>")
    parser.add_argument("--limit", type=int, default=None, help="answer only the first N questions")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=None, help="default: the benchmark's")
    parser.add_argument("--speed-samples", type=int, default=32, help="prompts for the TFLOPs and prefill timing")
    parser.add_argument("--repeats", type=int, default=15, help="prefill timing repeats (median)")
    parser.add_argument("--template", default="vicuna_v1")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                        help="default: bfloat16 on cuda, float32 on cpu")


def pruner_specs(args: argparse.Namespace) -> list[str]:
    return [f"fastv:{s}" for s in args.fastv] + [f"pdrop:{s}" for s in args.pdrop]


def run_compare(args: argparse.Namespace) -> list[MethodResult]:
    from ..data.tokenizer import load_tokenizer
    from ..errors import ConfigError, DataError, UsageError
    from ..model.folder import check_model_folder, load_model_folder
    from ..prune import build_pruner
    from ..prune.view import with_pruner
    from ..data.processor import get_processor
    from .answer import check_images, generate_answers, question_encoder
    from .cli import read_questions
    from .prompts import PromptOptions
    from .scorers import get_benchmark
    from .speed import question_inputs

    # Every input is checked before any model loads or anything is written (gamma_mod/errors.py).
    benchmark = get_benchmark(args.benchmark)
    if benchmark.submission_only:
        raise UsageError(f"--benchmark {benchmark.name}: scored by its server, no local accuracy to compare")
    specs = pruner_specs(args)
    for spec in specs:
        build_pruner(spec)  # a bad setting fails before any model loads
    for flag, folder in [("--base", args.base)] + [("--mod", f) for f in args.mod] + [("--pmod", f) for f in args.pmod]:
        check_model_folder(folder, tokenizer=True, what=flag)
    if not Path(args.data).is_dir():
        raise DataError(f"no benchmark data folder at {args.data} (--data)", "missing file")
    out = Path(args.out) if args.out else Path(args.base) / "compare" / benchmark.name
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.startswith("cuda") else "float32"))
    questions = read_questions(benchmark, Path(args.data), PromptOptions())
    if args.limit is not None:
        questions = questions[:args.limit]
    check_images(questions)

    folders = {"dense": Path(args.base)}
    models = {"dense": load_model_folder(args.base, what="--base", dtype=dtype).to(device).eval()}
    if models["dense"].model.pruner is not None:
        raise ConfigError(f"--base {args.base}: its config.json sets a token pruner; the reference must be dense")
    for spec in specs:
        view = with_pruner(models["dense"], spec)
        models[view.model.pruner.describe()] = view
        folders[view.model.pruner.describe()] = Path(args.base)
    for folder in [*args.mod, *args.pmod]:
        model = load_model_folder(folder, what="--mod/--pmod", dtype=dtype).to(device).eval()
        mod = model.config.mod_config()
        kind = {"gamma": "γ-MoD", "pmod": "p-MoD"}[mod.strategy] if mod is not None else "dense"
        name = f"{kind} ({Path(folder).name})"
        models[name], folders[name] = model, Path(folder)

    encoders, speed_inputs = {}, {}
    for name, folder in folders.items():
        processor = get_processor(models[name], tokenizer=load_tokenizer(str(folder)), template=args.template)
        encoders[name] = (question_encoder(processor), processor.tokenizer)
        speed_inputs[name] = question_inputs(processor, questions[:args.speed_samples])

    def answer(name: str, model) -> float:
        encode, tokenizer = encoders[name]
        path = out / "answers" / (name.replace(" ", "_").replace("/", "-").replace("(", "").replace(")", "") + ".jsonl")
        path.unlink(missing_ok=True)  # fresh: every method answers in this run
        generate_answers(model, questions, encode, tokenizer, path, batch_size=args.batch_size,
                         max_new_tokens=args.max_new_tokens or benchmark.max_new_tokens, progress=False)
        metrics = benchmark.evaluate(path, Path(args.data), out)
        return float(metrics["accuracy"] if "accuracy" in metrics else next(
            v for v in metrics.values() if isinstance(v, (int, float))))

    rows = compare_methods(models, answer, speed_inputs, repeats=args.repeats)
    write_outputs(rows, out, title=f"{benchmark.name}: {len(questions)} questions, base {Path(args.base).name}",
                  settings={"base": args.base, "mod": args.mod, "pmod": args.pmod, "pruners": specs,
                            "benchmark": benchmark.name, "questions": len(questions), "device": device,
                            "dtype": str(dtype), "speed_samples": args.speed_samples, "repeats": args.repeats})
    return rows


def write_outputs(rows: Sequence[MethodResult], out: Path, title: str, settings: dict,
                  spread: dict[str, dict[str, float]] | None = None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    table = format_table(rows, spread)
    (out / "compare.md").write_text(f"{title}\n\n{table}\n")
    (out / "compare.json").write_text(json.dumps({"settings": settings, "rows": [asdict(r) for r in rows],
                                                  "spread": spread or {}}, indent=2))
    try:
        plot_comparison(rows, out / "compare.png", title, spread)
    except ImportError as e:
        logger.warning("no plot: %s", e)
    print(table)


def load_results(path: Path) -> list[MethodResult]:
    return [MethodResult(**r) for r in json.loads(Path(path).read_text())["rows"]]


def run(args: argparse.Namespace) -> int:
    run_compare(args)
    return 0
