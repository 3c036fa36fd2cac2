"""Real prompts for the speed report: the first questions of a LLaVA-format file, left-padded."""

from __future__ import annotations

from pathlib import Path

import torch

from ..data.dataset import open_image
from ..data.formats import DataError, read_records, record_id
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
    records = [(i, r) for i, r in enumerate(read_records(data_json)) if isinstance(r, dict) and r.get("image")]
    records = records[:num_samples]
    if not records:
        raise DataError("no records with an image", "no usable records", source=data_json)
    prompts, pixels = [], []
    for i, r in records:
        prompts.append(encode_prompt(tokenizer, get_template(template), r["conversations"][0]["value"],
                                     config.num_image_tokens))
        try:
            pixels.append(processor(open_image(Path(image_folder or ".") / r["image"], record_id(r, i))))
        except DataError as e:
            raise e.located(data_json) from None
    ids, mask = left_pad(prompts, tokenizer.pad_token_id)
    return SpeedInputs(ids, mask, torch.stack(pixels))
