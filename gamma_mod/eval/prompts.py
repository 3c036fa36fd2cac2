"""Real prompts for the speed report: the first questions of a LLaVA-format file, left-padded."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from PIL import Image

from .answer import left_pad
from .speed import SpeedInputs


def prompts_from_dataset(model_dir: str, data_json: str, image_folder: str | None, num_samples: int,
                         template: str = "vicuna_v1") -> SpeedInputs:
    from transformers import AutoConfig

    from ..data.preprocess import encode_prompt
    from ..data.templates import get_template
    from ..data.tokenizer import load_tokenizer
    from ..model.vision import ImageProcessor

    config = AutoConfig.from_pretrained(model_dir)
    tokenizer = load_tokenizer(model_dir)
    processor = ImageProcessor.from_model_config(config)
    records = [r for r in json.loads(Path(data_json).read_text()) if r.get("image")][:num_samples]
    if not records:
        raise ValueError(f"{data_json}: no records with an image")
    prompts, pixels = [], []
    for r in records:
        prompts.append(encode_prompt(tokenizer, get_template(template), r["conversations"][0]["value"],
                                     config.num_image_tokens))
        with Image.open(Path(image_folder or ".") / r["image"]) as img:
            pixels.append(processor(img))
    ids, mask = left_pad(prompts, tokenizer.pad_token_id)
    return SpeedInputs(ids, mask, torch.stack(pixels))
