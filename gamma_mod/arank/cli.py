"""`gamma-mod arank`: per-layer ARank of a (stage-1) model on instruction data."""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

from .analyze import compute_arank, plot_arank


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model folder (with its tokenizer)")
    parser.add_argument("--data", required=True, help="LLaVA-format JSON")
    parser.add_argument("--images", help="image folder")
    parser.add_argument("--num-samples", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--template", default="vicuna_v1")
    parser.add_argument("--max-length", type=int, default=4096)
    parser.add_argument("--tol", type=float, default=None, help="singular values <= tol count as zero (default: torch's)")
    parser.add_argument("--out", default="arank.json")


def load_batches(model_path: str, data: str, images: str | None, template: str, max_length: int, batch_size: int):
    from torch.utils.data import DataLoader

    from ..data.dataset import DataCollator, SupervisedDataset
    from ..data.templates import get_template
    from ..data.tokenizer import load_tokenizer
    from ..model import LlavaLlamaForCausalLM
    from ..model.vision import ImageProcessor

    model = LlavaLlamaForCausalLM.from_pretrained(model_path)
    tokenizer = load_tokenizer(model_path)
    dataset = SupervisedDataset(data, images, tokenizer, ImageProcessor.from_model_config(model.config),
                                get_template(template), model.config.num_image_tokens, max_length, on_bad_record="skip")
    collator = DataCollator(tokenizer.pad_token_id)
    return model, DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collator)


def run(args: argparse.Namespace) -> int:
    model, loader = load_batches(args.model, args.data, args.images, args.template, args.max_length, args.batch_size)
    result = compute_arank(model, loader, args.num_samples, tol=args.tol)
    out = Path(args.out)
    result.save_json(out)
    try:
        plot_arank(result, out.with_suffix(".png"))
    except ImportError as e:
        print(f"no plot: {e}")
    for i, (m, s) in enumerate(zip(result.mean, result.std)):
        print(f"layer {i:3d}: ARank {m:8.2f} +- {s:.2f}")
    print(f"wrote {out} ({result.num_samples} samples)")
    return 0
