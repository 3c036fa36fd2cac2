"""Efficiency report: dense vs MoD on the same inputs, measured in one run.

Per model: prefill throughput (samples/s), decode tokens/s, end-to-end generation time, KV-cache
size after prefill, peak GPU memory (CUDA only), the measured skip rate of MoD layers, and analytic
TFLOPs (paper convention, see `flops.py`) both nominal (configured ratio) and measured (from what
the model really skipped). Timings use warm-up runs and CUDA synchronisation.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import DataError, UsageError
from .answer import question_features
from .flops import decoder_shape, decoder_tflops, tflops_from_layer_tokens


@dataclass
class SpeedInputs:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    pixel_values: torch.Tensor | None
    # the other vision fields of a Hugging Face family's batch (image_grid_thw, image_sizes, videos, ...)
    extra: dict[str, torch.Tensor] = field(default_factory=dict)

    @classmethod
    def from_batch(cls, batch: dict) -> "SpeedInputs":
        """A processor's left-padded collate output (`processor.collate(features, padding_side="left")`)."""
        extra = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)
                 and k not in ("input_ids", "attention_mask", "pixel_values", "labels")}
        return cls(batch["input_ids"], batch["attention_mask"], batch.get("pixel_values"), extra)

    def model_kwargs(self, model) -> dict[str, torch.Tensor]:
        """input_ids, attention_mask and the vision fields on the model's device, floats in its dtype."""
        device = next(model.parameters()).device
        kwargs = dict(input_ids=self.input_ids.to(device), attention_mask=self.attention_mask.to(device))
        if self.pixel_values is not None:
            kwargs["pixel_values"] = self.pixel_values.to(device=device, dtype=model.dtype)
        for key, value in self.extra.items():
            kwargs[key] = value.to(device=device, dtype=model.dtype if value.is_floating_point() else value.dtype)
        return kwargs


@dataclass
class SpeedRow:
    name: str
    prefill_samples_per_s: float
    decode_tokens_per_s: float  # nan when timing noise exceeded the decode time
    generate_s: float
    kv_cache_mb: float
    peak_memory_mb: float | None
    skip_rate: float  # skipped / routable tokens, mean over MoD layers (0 for dense)
    tflops: float  # per sample, tokens actually processed


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@torch.no_grad()
def alternating_prefill_times(models: dict[str, torch.nn.Module], inputs: dict[str, SpeedInputs], repeats: int = 15,
                              warmup: int = 2) -> dict[str, float]:
    """Median prefill seconds per model, the models timed in turn within each repeat, so a change of
    machine load during the measurement hits all of them alike (ratios stay meaningful on a shared CPU)."""
    times: dict[str, list[float]] = {name: [] for name in models}
    for round_ in range(warmup + repeats):
        for name, model in models.items():
            device = next(model.parameters()).device
            kwargs = dict(inputs[name].model_kwargs(model), use_cache=True, logits_to_keep=1)
            _sync(device)
            start = time.perf_counter()
            model(**kwargs)
            _sync(device)
            if round_ >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def outputs_cache(outputs):
    """The KV cache of a forward's outputs: ours name it `cache`, transformers' `past_key_values`."""
    cache = getattr(outputs, "cache", None)
    return cache if cache is not None else getattr(outputs, "past_key_values", None)


def kv_cache_bytes(cache) -> int:
    total = 0
    for layer in getattr(cache, "layers", []):
        for name in ("keys", "values"):
            tensor = getattr(layer, name, None)
            if isinstance(tensor, torch.Tensor):
                total += tensor.numel() * tensor.element_size()
    return total


def measured_tflops(model, inputs: SpeedInputs, stats: dict, prune_stats=None) -> float:
    """Paper convention, per sample: dense layers see every real token, MoD layers what they kept;
    with a token pruner (`prune_stats`, the prefill's `last_prune_stats`) each layer what is left."""
    shape = decoder_shape(model.config)
    seq = float(inputs.attention_mask.sum(dim=1).float().mean())
    batch = inputs.input_ids.shape[0]
    skip = {i: (skipped / batch) / seq for i, (_, skipped) in stats.items()}
    if prune_stats is not None:  # each layer's own mean token count (MoD skips subtracted)
        tokens = [float(t.float().mean()) - skip.get(i, 0.0) * seq for i, t in enumerate(prune_stats.layer_tokens)]
        return tflops_from_layer_tokens(tokens, shape.hidden, shape.ffn, q_dim=shape.q_dim, kv_dim=shape.kv_dim)
    return decoder_tflops(int(round(seq)), shape.hidden, shape.ffn, shape.num_layers, sorted(skip), skip,
                          q_dim=shape.q_dim, kv_dim=shape.kv_dim)


@torch.no_grad()
def measure(name: str, model, inputs: SpeedInputs, max_new_tokens: int = 16, repeats: int = 3, warmup: int = 1) -> SpeedRow:
    device = next(model.parameters()).device
    model.eval()
    kwargs = inputs.model_kwargs(model)
    batch = inputs.input_ids.shape[0]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    # Prefill as generate() runs it: full prompt, KV cache filled, logits for the last position only.
    prefill_s = _timed(lambda: model(**kwargs, use_cache=True, logits_to_keep=1), device, repeats, warmup)
    out = model(**kwargs, use_cache=True, logits_to_keep=1)
    stats = dict(getattr(model, "last_routing_stats", None) or {})  # a plain family model has none
    prune_stats = getattr(getattr(model, "model", None), "last_prune_stats", None)  # decode steps overwrite it
    kv = kv_cache_bytes(outputs_cache(out))
    del out

    def generate(n: int):
        return lambda: model.generate(**kwargs, max_new_tokens=n, min_new_tokens=n, do_sample=False)

    # Decode speed = the difference between generating N tokens and generating 1 (same prefill).
    first_token_s = _timed(generate(1), device, repeats, warmup)
    generate_s = _timed(generate(max_new_tokens), device, repeats, warmup)
    decode_s = generate_s - first_token_s
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    routable = sum(r for r, _ in stats.values())
    skip_rate = sum(s for _, s in stats.values()) / routable if routable else 0.0
    return SpeedRow(
        name=name, prefill_samples_per_s=batch / prefill_s,
        decode_tokens_per_s=batch * (max_new_tokens - 1) / decode_s if decode_s > 0 else float("nan"),
        generate_s=generate_s, kv_cache_mb=kv / 2**20, peak_memory_mb=peak, skip_rate=skip_rate,
        tflops=measured_tflops(model, inputs, stats, prune_stats),
    )


def format_table(rows: Sequence[SpeedRow]) -> str:
    base = rows[0]
    lines = [
        "| model | prefill samples/s | decode tok/s | generate s | KV cache MB | peak GPU MB | skipped (of routable) | TFLOPs/sample | prefill speed-up |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        peak = f"{r.peak_memory_mb:.0f}" if r.peak_memory_mb is not None else "n/a (CPU)"
        lines.append(
            f"| {r.name} | {r.prefill_samples_per_s:.2f} | {r.decode_tokens_per_s:.1f} | {r.generate_s:.3f} | "
            f"{r.kv_cache_mb:.2f} | {peak} | {100 * r.skip_rate:.1f}% | {r.tflops:.4g} | "
            f"{r.prefill_samples_per_s / base.prefill_samples_per_s:.2f}x |"
        )
    return "\n".join(lines)


def speed_report(models: dict[str, torch.nn.Module], inputs: SpeedInputs, **kwargs) -> list[SpeedRow]:
    """Measure every model on the same inputs in one run; the first model is the baseline."""
    return [measure(name, model, inputs, **kwargs) for name, model in models.items()]


# -- CLI ------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dense", required=True, help="dense model folder (baseline)")
    parser.add_argument("--mod", required=True, nargs="+", help="MoD model folder(s)")
    parser.add_argument("--data", help="LLaVA-format JSON whose prompts are used (default: random prompts)")
    parser.add_argument("--images", help="image folder for --data")
    parser.add_argument("--num-samples", type=int, default=8)
    parser.add_argument("--text-tokens", type=int, default=32, help="question tokens per random prompt")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--compat", choices=["ours", "official"], default=None,
                        help="MoD behaviour of the --mod models: ours or official (released gamma-MoD rules); "
                             "default: each config's")
    parser.add_argument("--prune", action="append", default=[], metavar="SPEC",
                        help="one more row: the dense model with a token pruner (gamma_mod.prune), e.g. "
                             "fastv:K=2,R=0.5 or pdrop:layers=8,16,24,lambda=0.5; repeatable")


def question_inputs(processor, questions) -> SpeedInputs:
    """Prompts of benchmark questions, posed by the model's processor and left-padded, for timing."""
    return SpeedInputs.from_batch(processor.collate([question_features(processor, q) for q in questions],
                                                    padding_side="left"))


def random_inputs(config, batch: int, text_tokens: int, seed: int = 0) -> SpeedInputs:
    """[bos, image tokens, question tokens]: the LLaVA prompt shape, random content."""
    g = torch.Generator().manual_seed(seed)
    n_image = config.num_image_tokens
    text = torch.randint(3, config.vocab_size, (batch, text_tokens), generator=g)
    text = text.masked_fill(text == config.image_token_index, 3)  # no stray image tokens in the question
    image = torch.full((batch, n_image), config.image_token_index)
    ids = torch.cat([torch.full((batch, 1), config.bos_token_id or 1), image, text], dim=1)
    size = config.image_input_size
    pixels = torch.randn(batch, 3, size, size, generator=g)
    return SpeedInputs(ids, torch.ones_like(ids), pixels)


def family_inputs(model, folder: str, data: str | None, images: str | None, num_samples: int) -> SpeedInputs:
    """Prompts for a Hugging Face family model, posed by its own processor: the first human turns of --data's
    records with their image / video (paths relative to --images, else to the JSON's folder), or, without
    --data, "Describe the image." with seeded random 64x64 images."""
    import numpy as np

    from ..data.formats import read_records
    from ..families.processing import HFFamilyProcessor

    processor = HFFamilyProcessor.for_model(model, folder)
    features = []
    if data:
        root = Path(images) if images else Path(data).parent
        for record in read_records(data)[:num_samples]:
            question = record["conversations"][0]["value"]
            media = {k: str(root / record[k]) for k in ("image", "video") if record.get(k)}
            features.append(processor.encode_prompt(question, **media))
    else:
        rng = np.random.default_rng(0)
        for _ in range(num_samples):
            image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
            features.append(processor.encode_prompt("Describe the image.", image=image))
    return SpeedInputs.from_batch(processor.collate(features, padding_side="left"))


def run(args: argparse.Namespace) -> int:
    from ..model.folder import check_model_folder, family_folder, load_model_folder

    for flag in ("num_samples", "max_new_tokens", "repeats"):
        if getattr(args, flag) < 1:
            raise UsageError(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    if args.data and not Path(args.data).is_file():
        raise DataError("no such data file (--data)", "missing file", source=args.data)
    dtype = getattr(torch, args.dtype)
    for flag, path in [("--dense", args.dense)] + [("--mod", path) for path in args.mod]:
        # a family's dense folder always brings its processor (prompts are posed by it)
        needs_tokenizer = flag == "--dense" and (bool(args.data) or family_folder(path) is not None)
        check_model_folder(path, tokenizer=needs_tokenizer, what=flag)  # all before loading any
    models = {"dense": load_model_folder(args.dense, what="--dense", dtype=dtype).to(args.device)}
    for path in args.mod:
        models[f"MoD {path}"] = load_model_folder(path, what="--mod", compat=args.compat, dtype=dtype).to(args.device)
    from ..prune.view import with_pruner

    for spec in [] if family_folder(args.dense) else args.prune:  # same weights, one row per pruner setting
        view = with_pruner(models["dense"], spec)
        models[f"dense + {view.model.pruner.describe()}"] = view
    config = models["dense"].config
    if family_folder(args.dense):
        if args.prune:
            raise UsageError("--prune: the token pruners run inside the LLaVA fork's decoder only, not in a Hugging "
                             f"Face family model ({args.dense})")
        inputs = family_inputs(models["dense"], args.dense, args.data, args.images, args.num_samples)
    elif args.data:
        from .prompts import prompts_from_dataset

        inputs = prompts_from_dataset(args.dense, args.data, args.images, args.num_samples)
    else:
        inputs = random_inputs(config, args.num_samples, args.text_tokens)
    rows = speed_report(models, inputs, max_new_tokens=args.max_new_tokens, repeats=args.repeats)
    print(format_table(rows))
    return 0
