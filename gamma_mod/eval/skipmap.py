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
        side = grid.shape[0]
        cell = tile / side
        panel = base.copy()
        mask = Image.new("L", (tile, tile), 0)
        draw_mask = ImageDraw.Draw(mask)
        for r in range(side):
            for c in range(side):
                if grid[r, c]:
                    draw_mask.rectangle([c * cell, r * cell, (c + 1) * cell - 1, (r + 1) * cell - 1], fill=255)
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
    from ..model.folder import load_model_folder

    out = Path(args.out)
    if not out.parent.is_dir() or out.suffix.lower() not in Image.registered_extensions():
        raise UsageError(f"--out {out}: needs an existing folder and an image suffix (.png, .jpg, ...)")
    image = open_image(Path(args.image))  # a missing or truncated file: DataError naming it
    model = load_model_folder(args.model, tokenizer=True, what="--model", compat=args.compat)
    if model.config.mod_config() is None:
        raise UsageError(f"--model {args.model} has no MoD layers: no skip map to draw")
    processor = get_processor(model, tokenizer=load_tokenizer(args.model), template=args.template)
    try:
        prompt = processor.collate([processor.encode_prompt(args.question, image=image)], padding_side="left")
    except ValueError as e:  # e.g. two image tags for the one image
        raise UsageError(f"--question: {e}") from None
    skip_map = compute_skip_map(model, prompt["input_ids"], prompt["pixel_values"])
    draw_skip_map(image, skip_map, args.out)
    for layer, frac in zip(skip_map.layers, skip_map.skip_fraction):
        print(f"layer {layer:3d}: {100 * frac:5.1f}% of image patches skipped")
    print(f"wrote {args.out}")
    return 0
