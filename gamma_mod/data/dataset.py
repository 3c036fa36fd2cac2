"""A supervised multimodal dataset over LLaVA JSON + an image folder, and its collator."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from .formats import DataError, read_records, record_id, validate_record
from .preprocess import IGNORE_INDEX, TokenizedSample, tokenize_record
from .templates import ConversationTemplate

logger = logging.getLogger(__name__)


def open_image(path: Path, rid: str) -> Image.Image:
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except FileNotFoundError:
        raise DataError(f"record {rid}: image file {path} not found", "missing image") from None
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"record {rid}: image file {path} is corrupt or not an image ({e})", "corrupt image") from None


@dataclass
class _Entry:
    id: str
    sample: TokenizedSample
    image: Path | None


class SupervisedDataset(Dataset):
    """Validated and tokenized up front, so a bad record fails (or is counted) before training starts.

    on_bad_record: "error" raises the first DataError (it names the file and record id); "skip"
    drops bad records and logs how many, per reason (also in `.skipped`).
    """

    def __init__(self, json_path: str | Path, image_folder: str | Path | None, tokenizer,
                 image_processor, template: ConversationTemplate, num_image_tokens: int, max_length: int,
                 on_bad_record: str = "error") -> None:
        if on_bad_record not in ("error", "skip"):
            raise ValueError(f"on_bad_record must be 'error' or 'skip', got {on_bad_record!r}")
        self.image_processor = image_processor
        self.image_folder = Path(image_folder) if image_folder else None
        self.skipped: Counter[str] = Counter()
        self.entries: list[_Entry] = []
        records = read_records(json_path)
        for index, record in enumerate(records):
            try:
                self.entries.append(self._prepare(record, index, str(json_path), tokenizer, template,
                                                  num_image_tokens, max_length))
            except DataError as error:
                if on_bad_record == "error":
                    raise DataError(f"{json_path}: {error}", error.reason) from None
                self.skipped[error.reason] += 1
        if self.skipped:
            detail = ", ".join(f"{n} {reason}" for reason, n in sorted(self.skipped.items()))
            logger.warning("%s: skipped %d of %d records: %s", json_path, sum(self.skipped.values()), len(records), detail)
        logger.info("%s: %d records ready", json_path, len(self.entries))

    def _prepare(self, record: Any, index: int, source: str, tokenizer, template, num_image_tokens, max_length) -> _Entry:
        validate_record(record, index, source)
        rid = record_id(record, index)
        image = None
        if record.get("image"):
            if self.image_folder is None:
                raise DataError(f"record {rid}: has an image but no image folder was given", "missing image")
            image = self.image_folder / record["image"]
            open_image(image, rid)  # fail now, not mid-epoch
        sample = tokenize_record(record, tokenizer, template, num_image_tokens if image else 0, max_length)
        return _Entry(rid, sample, image)

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def lengths(self) -> list[int]:
        return [len(e.sample.input_ids) for e in self.entries]

    def __getitem__(self, i: int) -> dict[str, Any]:
        entry = self.entries[i]
        item: dict[str, Any] = {
            "input_ids": torch.tensor(entry.sample.input_ids),
            "labels": torch.tensor(entry.sample.labels),
            "sample_id": entry.id,
        }
        if entry.image is not None:
            item["pixel_values"] = self.image_processor(open_image(entry.image, entry.id))
        return item


@dataclass
class DataCollator:
    """Right-pads a batch (labels with -100) and stacks the images of the samples that have one."""

    pad_token_id: int

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        width = max(len(x["input_ids"]) for x in items)
        batch = len(items)
        input_ids = torch.full((batch, width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((batch, width), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros(batch, width, dtype=torch.long)
        for b, x in enumerate(items):
            n = len(x["input_ids"])
            input_ids[b, :n] = x["input_ids"]
            labels[b, :n] = x["labels"]
            attention_mask[b, :n] = 1
        out: dict[str, Any] = {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}
        if all("sample_id" in x for x in items):
            out["sample_ids"] = [x["sample_id"] for x in items]  # for error messages; the trainer pops it
        images = [x["pixel_values"] for x in items if "pixel_values" in x]
        if images:
            out["pixel_values"] = torch.stack(images)
        return out
