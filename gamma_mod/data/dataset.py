"""A supervised multimodal dataset over LLaVA JSON + an image folder, and its collator.

Tokenization, image pixels and batching are the LLaVA-fork processor's (gamma_mod.data.processor):
records are tokenized up front (`processor.tokenize`), images opened per item (`processor.image_tensor`).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from .formats import DataError, read_records, record_id, validate_record
from .images import check_image, open_image
from .preprocess import IGNORE_INDEX, OVERLONG_MODES, TokenizedSample
from .processor import LlavaForkProcessor, collate_features
from .templates import ConversationTemplate

__all__ = ["BAD_RECORD_MODES", "DataCollator", "IGNORE_INDEX", "SupervisedDataset", "check_image", "open_image"]

logger = logging.getLogger(__name__)
BAD_RECORD_MODES = ("error", "skip")


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
        self.processor = LlavaForkProcessor(tokenizer, template, num_image_tokens, image_processor, max_length,
                                            on_overlong)
        self.image_folder = Path(image_folder) if image_folder else None
        self.skipped: dict[str, int] = {}
        self.entries: list[_Entry] = []
        records = read_records(json_path)
        counts: Counter[str] = Counter()
        for index, record in enumerate(records):
            try:
                self.entries.append(self._prepare(record, index))
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

    @classmethod
    def from_processor(cls, json_path: str | Path, image_folder: str | Path | None, processor: LlavaForkProcessor,
                       on_bad_record: str = "error") -> "SupervisedDataset":
        """The dataset of `processor`'s tokenizer, template, image processing, max_length and on_overlong."""
        return cls(json_path, image_folder, processor.tokenizer, processor.image_processor, processor.template,
                   processor.num_image_tokens, processor.max_length, on_bad_record, processor.on_overlong)

    def _prepare(self, record: Any, index: int) -> _Entry:
        validate_record(record, index, self.json_path)
        rid = record_id(record, index)
        image = None
        if record.get("image"):
            if self.image_folder is None:
                raise DataError("has an image but no image folder was given", "missing image")
            image = self.image_folder / record["image"]
            check_image(image, rid)  # fail now, not mid-epoch
        return _Entry(rid, self.processor.tokenize(record), image)

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
            item["pixel_values"] = self.processor.image_tensor(image, entry.id)  # (3, S, S)
        return item


@dataclass
class DataCollator:
    """Right-pads a batch (input_ids with pad, labels with -100, attention_mask 0) and stacks the
    images of the samples that have one, in batch order: the model fills image tokens in that order."""

    pad_token_id: int

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        return collate_features(items, self.pad_token_id, "right")
