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
from .preprocess import IGNORE_INDEX, OVERLONG_MODES, TokenizedSample, tokenize_record
from .templates import ConversationTemplate

logger = logging.getLogger(__name__)
BAD_RECORD_MODES = ("error", "skip")


def open_image(path: Path, rid: str | None = None) -> Image.Image:
    """The image as RGB, fully decoded (a truncated file fails here, not in the collator)."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except FileNotFoundError:
        raise DataError(f"image file {path} not found", "missing image", record_id=rid) from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise DataError(f"image file {path} is corrupt or not an image ({e})", "corrupt image",
                        record_id=rid) from None


def check_image(path: Path, rid: str | None = None) -> None:
    """Cheap init-time check (header + PIL's verify, no full decode): 665K images must not take an hour."""
    try:
        with Image.open(path) as img:
            img.verify()
    except FileNotFoundError:
        raise DataError(f"image file {path} not found", "missing image", record_id=rid) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"image file {path} is corrupt or not an image ({e})", "corrupt image",
                        record_id=rid) from None


@dataclass
class _Entry:
    id: str
    sample: TokenizedSample
    image: Path | None


class SupervisedDataset(Dataset):
    """Validated and tokenized up front, so a bad record fails (or is counted) before training starts.

    on_bad_record: "error" raises the first DataError (it names the file and record id); "skip"
    drops bad records, logs how many per reason and keeps the counts in `.skipped`.
    on_overlong: "error" makes a sample longer than max_length a bad record ("too long");
    "truncate" cuts it as LLaVA does, counted in `.truncated` and the log. `.official_masked`
    counts the samples LLaVA's "tokenization mismatch" rule would have masked entirely (we train
    them; see gamma_mod.data.preprocess), logged so runs can be compared.
    Items: input_ids, labels (1-D long tensors), sample_id, and pixel_values (3, S, S) when the
    record has an image.
    """

    def __init__(self, json_path: str | Path, image_folder: str | Path | None, tokenizer,
                 image_processor, template: ConversationTemplate, num_image_tokens: int, max_length: int,
                 on_bad_record: str = "error", on_overlong: str = "error") -> None:
        if on_bad_record not in BAD_RECORD_MODES:
            raise ValueError(f"on_bad_record must be one of {BAD_RECORD_MODES}, got {on_bad_record!r}")
        if on_overlong not in OVERLONG_MODES:
            raise ValueError(f"on_overlong must be one of {OVERLONG_MODES}, got {on_overlong!r}")
        self.on_overlong = on_overlong
        self.json_path = Path(json_path)
        self.image_processor = image_processor
        self.image_folder = Path(image_folder) if image_folder else None
        self.skipped: dict[str, int] = {}
        self.entries: list[_Entry] = []
        records = read_records(json_path)
        counts: Counter[str] = Counter()
        for index, record in enumerate(records):
            try:
                self.entries.append(self._prepare(record, index, tokenizer, template, num_image_tokens, max_length))
            except DataError as error:
                error = error.located(self.json_path, record_id(record, index))
                if on_bad_record == "error":
                    raise error from None
                counts[error.reason] += 1
                logger.debug("skipping: %s", error)
        self.skipped = dict(counts.most_common())
        if counts:
            detail = ", ".join(f"{n} {reason}" for reason, n in counts.most_common())
            logger.warning("%s: skipped %d of %d records: %s", json_path, counts.total(), len(records), detail)
        self.truncated = sum(e.sample.truncated for e in self.entries)
        self.official_masked = sum(e.sample.official_masked for e in self.entries)
        if self.truncated:
            logger.warning("%s: truncated %d of %d samples to max_length %d (data.on_overlong: truncate)", json_path,
                           self.truncated, len(self.entries), max_length)
        if self.official_masked:
            logger.warning("%s: %d of %d samples would be fully masked by LLaVA's tokenization-mismatch rule "
                           "(they train here)", json_path, self.official_masked, len(self.entries))
        logger.info("%s: %d records ready", json_path, len(self.entries))

    def _prepare(self, record: Any, index: int, tokenizer, template, num_image_tokens, max_length) -> _Entry:
        validate_record(record, index, self.json_path)
        rid = record_id(record, index)
        image = None
        if record.get("image"):
            if self.image_folder is None:
                raise DataError("has an image but no image folder was given", "missing image")
            image = self.image_folder / record["image"]
            check_image(image, rid)  # fail now, not mid-epoch
        sample = tokenize_record(record, tokenizer, template, num_image_tokens, max_length, self.on_overlong)
        return _Entry(rid, sample, image)

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def lengths(self) -> list[int]:
        """Token count per sample (image tokens included), for group-by-length sampling."""
        return [len(e.sample.input_ids) for e in self.entries]

    length = lengths  # the name the brief / some callers use

    @property
    def modality_lengths(self) -> list[int]:
        """LLaVA's convention: positive for samples with an image, negative for text-only ones."""
        return [n if e.image is not None else -n for n, e in zip(self.lengths, self.entries)]

    def __getitem__(self, i: int) -> dict[str, Any]:
        entry = self.entries[i]
        item: dict[str, Any] = {
            "input_ids": torch.tensor(entry.sample.input_ids, dtype=torch.long),
            "labels": torch.tensor(entry.sample.labels, dtype=torch.long),
            "sample_id": entry.id,
        }
        if entry.image is not None:
            try:
                image = open_image(entry.image, entry.id)
            except DataError as error:  # the file changed since __init__ checked it
                raise error.located(self.json_path) from None
            item["pixel_values"] = self.image_processor(image)
        return item


@dataclass
class DataCollator:
    """Right-pads a batch (input_ids with pad, labels with -100, attention_mask 0) and stacks the
    images of the samples that have one, in batch order: the model fills image tokens in that order."""

    pad_token_id: int

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        width = max(len(x["input_ids"]) for x in items)
        batch = len(items)
        input_ids = torch.full((batch, width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((batch, width), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros(batch, width, dtype=torch.long)
        for b, x in enumerate(items):
            n = len(x["input_ids"])
            input_ids[b, :n] = torch.as_tensor(x["input_ids"])
            labels[b, :n] = torch.as_tensor(x["labels"])
            attention_mask[b, :n] = 1
        out: dict[str, Any] = {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}
        if all("sample_id" in x for x in items):
            out["sample_ids"] = [x["sample_id"] for x in items]  # for error messages; the trainer pops it
        images = [x["pixel_values"] for x in items if "pixel_values" in x]
        if images:
            out["pixel_values"] = torch.stack(images)  # (N_images, 3, S, S)
        return out
