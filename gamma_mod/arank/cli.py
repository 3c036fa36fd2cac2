"""`gamma-mod arank`: per-layer ARank of a dense (stage-1) model on instruction data.

Writes the result JSON (`--out`) and a bar plot with the same name and a .png suffix next to it.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..errors import DataError, UsageError
from ..model.folder import load_model_folder
from .analyze import compute_arank, plot_arank

logger = logging.getLogger(__name__)

DTYPES = ("auto", "float32", "bfloat16", "float16")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True,
                        help="dense model folder (with its tokenizer files): our LLaVA fork or a Hugging Face family "
                             "(llava-hf, LLaVA-OneVision, Qwen2.5-VL, Qwen3-VL) with its processor")
    parser.add_argument("--data", required=True, help="LLaVA-format JSON (instruction data)")
    parser.add_argument("--images", help="image folder the JSON's image paths are relative to")
    parser.add_argument("--num-samples", type=int, default=64, help="first N usable records")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--template", default="vicuna_v1", help="conversation template (gamma_mod.data.templates)")
    parser.add_argument("--max-length", type=int, default=4096)
    parser.add_argument("--tol", type=float, default=None,
                        help="relative rank tolerance: singular values <= tol * max count as zero "
                             "(default: torch's, T * fp32 eps)")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--dtype", default="auto", choices=DTYPES, help="model weights' dtype (auto: as saved)")
    parser.add_argument("--out", default="arank.json")


def load_model(model_path: str, device: str | None = None, dtype: str = "auto"):
    import torch

    from ..model import LlavaLlamaForCausalLM

    kwargs = {} if dtype == "auto" else {"dtype": getattr(torch, dtype)}
    model = load_model_folder(model_path, LlavaLlamaForCausalLM, tokenizer=True, what="--model", **kwargs)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return model.to(device).eval()


def record_pool(num_samples: int) -> int:
    """How many leading records to read for `num_samples` usable ones (bad records are skipped)."""
    return max(2 * num_samples, num_samples + 64)


def build_loader(model, model_path: str, data: str, images: str | None, template: str, max_length: int,
                 batch_size: int, num_samples: int | None = None):
    """Records in file order (no shuffle: the same N samples every run), bad records skipped.

    With `num_samples`, only the first `record_pool(num_samples)` records are read: the dataset
    tokenizes every record and checks every image up front, hours on the 665K mix for 64 samples.
    """
    import json
    import tempfile

    from torch.utils.data import DataLoader

    from ..data.dataset import SupervisedDataset
    from ..data.formats import read_records
    from ..data.processor import get_processor
    from ..data.tokenizer import load_tokenizer
    from ..model.folder import family_folder

    if family_folder(model_path):
        # a Hugging Face family: its own processor and chat template (`template` is the fork's)
        from ..data.processor_dataset import ProcessorDataset
        from ..families.processing import HFFamilyProcessor

        processor = HFFamilyProcessor.for_model(model, model_path, max_length=max_length)
        limit = record_pool(num_samples) if num_samples is not None else None
        dataset = ProcessorDataset(data, images or Path(data).parent, processor, "skip", limit=limit)
        return DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=processor.collate)
    processor = get_processor(model, tokenizer=load_tokenizer(model_path), template=template, max_length=max_length)
    with tempfile.TemporaryDirectory() as tmp:
        if num_samples is not None:
            records = read_records(data)
            if len(records) > record_pool(num_samples):
                # The dataset keeps image paths relative to `images`, not to the JSON: a copy elsewhere is fine.
                data = Path(tmp) / Path(data).name
                data.write_text(json.dumps(records[: record_pool(num_samples)]))
        dataset = SupervisedDataset.from_processor(data, images, processor, on_bad_record="skip")
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=processor)  # right padding


def load_batches(model_path: str, data: str, images: str | None, template: str, max_length: int, batch_size: int,
                 device: str | None = None, dtype: str = "auto", num_samples: int | None = None):
    """(model, DataLoader) for `compute_arank`; also used by gamma_mod.pipeline."""
    model = load_model(model_path, device, dtype)
    return model, build_loader(model, model_path, data, images, template, max_length, batch_size, num_samples)


def run(args: argparse.Namespace) -> int:
    for flag, value in (("--num-samples", args.num_samples), ("--batch-size", args.batch_size)):
        if value < 1:
            raise UsageError(f"{flag} must be >= 1, got {value}")
    if Path(args.out).is_dir():
        raise UsageError(f"--out {args.out} is a folder; give the result JSON's file name")
    if not Path(args.data).is_file():  # before the model loads: fail in a second, not a minute
        raise DataError("no such data file (--data)", "missing file", source=args.data)
    model, loader = load_batches(args.model, args.data, args.images, args.template, args.max_length,
                                 args.batch_size, args.device, args.dtype, args.num_samples)
    if len(loader.dataset) == 0:
        skipped = ", ".join(f"{n} {reason}" for reason, n in loader.dataset.skipped.items())
        raise DataError(f"no usable records to compute ARank on ({skipped or 'the file is empty'})",
                        "no usable records", source=args.data)
    result = compute_arank(model, loader, args.num_samples, tol=args.tol)
    if result.num_samples < args.num_samples:
        logger.warning("only %d usable samples (asked for %d)", result.num_samples, args.num_samples)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result.save_json(out)
    try:
        plot_arank(result, out.with_suffix(".png"))
    except ImportError as e:
        logger.warning("no plot: %s", e)
    for i, (m, s) in enumerate(zip(result.mean, result.std)):
        print(f"layer {i:3d}: ARank {m:8.2f} +- {s:.2f}")
    print(f"wrote {out} ({result.num_samples} samples)")
    return 0
