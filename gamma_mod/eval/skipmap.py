"""Routing visualisation (the paper's Fig. 4): which image patches each MoD layer skipped.

`gamma-mod skipmap --model PATH --image IMG --question Q --out skip.png` draws the image once per
MoD layer with skipped patches greyed out, titled with the layer's skip fraction.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from ..data.processor import pose_question


@dataclass
class SkipMap:
    layers: list[int]
    grids: list[torch.Tensor]  # per MoD layer, (side, side) bool: True = patch skipped
    skip_fraction: list[float]  # per MoD layer, skipped image tokens / image tokens


@torch.no_grad()
def compute_skip_map(model, input_ids: torch.Tensor, pixel_values: torch.Tensor) -> SkipMap:
    """Run one prompt (batch 1) and read each MoD layer's keep decision at the image tokens."""
    if input_ids.shape[0] != 1:
        raise ValueError("compute_skip_map takes one prompt (batch 1)")
    model.eval()
    out = model.model(input_ids=input_ids, pixel_values=pixel_values)
    ctx = out.mod_context
    if ctx is None:
        raise ValueError("the model has no MoD layers: nothing to map")
    is_image = (input_ids[0] == model.config.image_token_index)
    n = int(is_image.sum())
    side = math.isqrt(n)
    if side * side != n:
        raise ValueError(f"{n} image tokens do not form a square patch grid (cls token selected?)")
    layers, grids, fractions = [], [], []
    for idx in sorted(ctx.stats):
        skipped = ~ctx.stats[idx].keep[0][is_image]
        layers.append(idx)
        grids.append(skipped.view(side, side).cpu())
        fractions.append(float(skipped.float().mean()))
    return SkipMap(layers, grids, fractions)


@torch.no_grad()
def compute_family_skip_map(model, batch: dict[str, torch.Tensor]) -> SkipMap:
    """compute_skip_map for a Hugging Face family's MoD twin: one prompt (a processor's collated batch of 1)
    with one image. The image's token grid: Qwen2.5-VL / Qwen3-VL: image_grid_thw's (h, w) over the 2x2 merge
    (any aspect ratio); llava-hf: the square patch grid; LLaVA-OneVision: the base (whole-image) tile, the first
    (image_size / patch_size)^2 image tokens (the anyres tiles and newline tokens that follow are not drawn)."""
    input_ids = batch["input_ids"]
    if input_ids.shape[0] != 1:
        raise ValueError("compute_family_skip_map takes one prompt (batch 1)")
    from ..families import get_family

    adapter = get_family(model.config)
    model.eval()
    param = next(model.parameters())
    model(**{k: v.to(param.device, dtype=param.dtype if v.is_floating_point() else v.dtype)
             for k, v in batch.items() if isinstance(v, torch.Tensor)})
    stats = model.last_routing_stats.layer_stats if hasattr(model.last_routing_stats, "layer_stats") else {}
    if not stats:
        raise ValueError("the model has no MoD layers: nothing to map")
    positions = (input_ids[0] == adapter.image_token_ids(model.config)[0]).nonzero().squeeze(1)
    if "image_grid_thw" in batch:
        t, h, w = (int(x) for x in batch["image_grid_thw"][0])
        merge = model.config.vision_config.spatial_merge_size
        shape = (h // merge, w // merge)
    elif adapter.name == "llava_onevision":
        side = model.config.vision_config.image_size // model.config.vision_config.patch_size
        shape = (side, side)
    else:
        side = math.isqrt(len(positions))
        if side * side != len(positions):
            raise ValueError(f"{len(positions)} image tokens do not form a square patch grid")
        shape = (side, side)
    positions = positions[: shape[0] * shape[1]].to(param.device)
    layers, grids, fractions = [], [], []
    for idx in sorted(stats):
        skipped = ~stats[idx].keep[0][positions]
        layers.append(idx)
        grids.append(skipped.view(*shape).cpu())
        fractions.append(float(skipped.float().mean()))
    return SkipMap(layers, grids, fractions)


def draw_skip_map(image: Image.Image, skip_map: SkipMap, path: str, tile: int = 192) -> Image.Image:
    """One tile per MoD layer: kept patches in colour, skipped patches dimmed grey; PIL only."""
    from PIL import ImageDraw

    cols = min(4, len(skip_map.layers))
    rows = math.ceil(len(skip_map.layers) / cols)
    header = 18
    canvas = Image.new("RGB", (cols * tile, rows * (tile + header)), "white")
    base = image.convert("RGB").resize((tile, tile), Image.Resampling.BICUBIC)
    grey = base.convert("L").convert("RGB").point(lambda v: v // 3 + 150)
    for k, (layer, grid, frac) in enumerate(zip(skip_map.layers, skip_map.grids, skip_map.skip_fraction)):
        rows_, cols_ = grid.shape  # a Qwen grid need not be square
        cell_h, cell_w = tile / rows_, tile / cols_
        panel = base.copy()
        mask = Image.new("L", (tile, tile), 0)
        draw_mask = ImageDraw.Draw(mask)
        for r in range(rows_):
            for c in range(cols_):
                if grid[r, c]:
                    draw_mask.rectangle([c * cell_w, r * cell_h, (c + 1) * cell_w - 1, (r + 1) * cell_h - 1],
                                        fill=255)
        panel.paste(grey, (0, 0), mask)
        x, y = (k % cols) * tile, (k // cols) * (tile + header)
        canvas.paste(panel, (x, y + header))
        ImageDraw.Draw(canvas).text((x + 4, y + 3), f"layer {layer}: {100 * frac:.0f}% skipped", fill="black")
    canvas.save(path)
    return canvas


def skipmap_question(question: str) -> str:
    """The user turn of the skip-map prompt: the question as given when it places `<image>` itself,
    else `<image>\n` + the question (model_vqa's layout), so the image is always in the prompt.
    It is the processor's rule for a question with one image (gamma_mod.data.processor.pose_question)."""
    return pose_question(question, n_images=1)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="MoD model folder (with its tokenizer)")
    parser.add_argument("--image", required=True)
    parser.add_argument("--question", required=True)
    parser.add_argument("--template", default="vicuna_v1")
    parser.add_argument("--out", default="skip.png")
    parser.add_argument("--compat", choices=["ours", "official"], default=None,
                        help="MoD behaviour: ours or official (released gamma-MoD rules); default: the config's")


def run(args: argparse.Namespace) -> int:
    from ..data.images import open_image
    from ..data.processor import get_processor
    from ..data.tokenizer import load_tokenizer
    from ..errors import UsageError
    from ..model.folder import family_folder, load_model_folder

    out = Path(args.out)
    if not out.parent.is_dir() or out.suffix.lower() not in Image.registered_extensions():
        raise UsageError(f"--out {out}: needs an existing folder and an image suffix (.png, .jpg, ...)")
    image = open_image(Path(args.image))  # a missing or truncated file: DataError naming it
    model = load_model_folder(args.model, tokenizer=True, what="--model", compat=args.compat)
    if family_folder(args.model):  # a Hugging Face family's MoD twin: its own processor and chat template
        from ..families.processing import HFFamilyProcessor

        if not getattr(model, "mod_layer_indices", None):
            raise UsageError(f"--model {args.model} has no MoD layers: no skip map to draw")
        processor = HFFamilyProcessor.for_model(model, args.model)
        skip_map = compute_family_skip_map(model, processor.collate([processor.encode_prompt(args.question,
                                                                                             image=image)]))
        return _finish(image, skip_map, args.out)
    if model.config.mod_config() is None:
        raise UsageError(f"--model {args.model} has no MoD layers: no skip map to draw")
    processor = get_processor(model, tokenizer=load_tokenizer(args.model), template=args.template)
    try:
        prompt = processor.collate([processor.encode_prompt(args.question, image=image)], padding_side="left")
    except ValueError as e:  # e.g. two image tags for the one image
        raise UsageError(f"--question: {e}") from None
    skip_map = compute_skip_map(model, prompt["input_ids"], prompt["pixel_values"])
    return _finish(image, skip_map, args.out)


def _finish(image: Image.Image, skip_map: SkipMap, out: str) -> int:
    draw_skip_map(image, skip_map, out)
    for layer, frac in zip(skip_map.layers, skip_map.skip_fraction):
        print(f"layer {layer:3d}: {100 * frac:5.1f}% of image patches skipped")
    print(f"wrote {out}")
    return 0
