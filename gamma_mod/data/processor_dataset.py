"""A training dataset over any MultimodalProcessor: LLaVA-format records encoded by `encode_conversation`.

The LLaVA fork trains from the Arrow cache (data/arrow.py), which stores the fork's own tokenization.
The Hugging Face families (gamma_mod/families/processing.py) encode images and videos with their own
processors (dynamic resolution, video patches, M-RoPE token types), so their records are encoded here,
once, in memory, when the dataset is built: a bad record (a missing image, a wrong tag count, too long)
is found before training starts, raised (`on_bad_record="error"`) or skipped and counted by reason in
the log (`"skip"`). Meant for sets that fit in memory (the synthetic sets, fine-tuning subsets).
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from .formats import DataError, read_records

logger = logging.getLogger(__name__)


class ProcessorDataset(Dataset):
    """`processor.encode_conversation(record, media_root=media_root)` of every record of `json_path`."""

    def __init__(self, json_path: str | Path, media_root: str | Path | None, processor: Any,
                 on_bad_record: str = "error", limit: int | None = None) -> None:
        if on_bad_record not in ("error", "skip"):
            raise ValueError(f"on_bad_record must be 'error' or 'skip', got {on_bad_record!r}")
        self.json_path = Path(json_path)
        records = read_records(json_path)
        if limit is not None:
            records = records[:limit]
        root = Path(media_root) if media_root is not None else None
        self.features: list[dict[str, Any]] = []
        self.skipped: dict[str, int] = {}
        bad: Counter = Counter()
        for index, record in enumerate(records):
            try:
                features = processor.encode_conversation(record, media_root=root)
            except DataError as error:
                error = error.located(self.json_path, f"#{index}")
                if on_bad_record == "error":
                    raise error from None
                bad[error.reason] += 1
                logger.debug("skipping: %s", error)
                continue
            features["sample_id"] = str(record.get("id", f"#{index}")) if isinstance(record, dict) else f"#{index}"
            self.features.append(features)
        if bad:
            self.skipped = dict(bad.most_common())
            logger.warning("%s: skipped %d of %d records: %s", self.json_path, bad.total(), len(records),
                           ", ".join(f"{n} {reason}" for reason, n in bad.most_common()))
        logger.info("%s: %d records encoded by the %s processor", self.json_path, len(self.features),
                    getattr(processor, "family", type(processor).__name__))

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.features[index]
