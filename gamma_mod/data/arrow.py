"""SupervisedDataset's records, validated and tokenized once into a memory-mapped Arrow dataset.

    key   = sha256(JSON bytes, tokenizer, template, num_image_tokens, max_length, on_overlong,
                   image folder, FORMAT_VERSION)
    cache = <json dir>/.gamma_mod_cache/<json stem>-<key[:16]>/  (or data.cache_dir)
    build : the JSON streamed (formats.iter_record_texts: one record parsed at a time) -> each record's
            exact JSON text in a memory-mapped one-column Arrow file -> map(num_proc) over file-backed
            shards runs the same checks and tokenization (the LLaVA-fork processor's; a map batch's
            strings in one tokenizer call, gamma_mod.data.batched) as SupervisedDataset, one row per
            record (bad ones carry reason+message)
          -> report.json (skip counts, every bad record, image (size, mtime)) + the good rows, saved
    load  : load_from_disk (memory-mapped: every rank and DataLoader worker shares the page cache)
    rows  : each run of image tokens is stored as ONE image id (its label one IGNORE_INDEX) with the run's
            length in `image_runs`; `__getitem__` expands it again. A 576-token image costs 1 id, not 576
            (LLaVA-1.5 records: ~5x smaller cache); runs cut by `on_overlong: truncate` keep their true length.

Items, skip counts, truncation and official-masked counts are those of
gamma_mod.data.dataset.SupervisedDataset on the same records (pinned by tests/test_data_arrow.py);
the tokenization rules are gamma_mod.data.preprocess's, untouched. The report is part of the cache,
so a cached start re-reports the same counts, and in "error" mode re-raises the same first error.
Concurrent starts (torchrun ranks, several jobs) serialise on a file lock: the first builds, the
others wait and load. A cached start re-stats every image and rebuilds when one's size or mtime
changed, so a replaced or deleted image is checked again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from filelock import FileLock
from torch.utils.data import Dataset

from .dataset import BAD_RECORD_MODES
from .formats import DataError, iter_record_texts, read_records, record_id, validate_record
from .images import check_image, open_image
from .preprocess import OVERLONG_MODES
from .processor import LlavaForkProcessor
from .templates import ConversationTemplate
from .tokenizer import image_token_id

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2  # bump when the row layout or any rule that shapes a row changes
CACHE_DIR_NAME = ".gamma_mod_cache"
FEATURES = datasets.Features({
    "sample_id": datasets.Value("string"),
    "input_ids": datasets.Sequence(datasets.Value("int32")),
    "labels": datasets.Sequence(datasets.Value("int32")),
    "image_runs": datasets.Sequence(datasets.Value("int32")),  # length of each collapsed image-token run, in order
    "image": datasets.Value("string"),  # "" for text-only records
    "modality_length": datasets.Value("int32"),  # LLaVA's sign convention: < 0 for text-only
    "truncated": datasets.Value("bool"),
    "official_masked": datasets.Value("bool"),
    "error_reason": datasets.Value("string"),  # "" for a good record
    "error_message": datasets.Value("string"),
})


def tokenizer_fingerprint(tokenizer) -> str:
    """What decides the ids: the fast tokenizer's full serialisation, special tokens and `legacy`."""
    h = hashlib.sha256(type(tokenizer).__name__.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    h.update(backend.to_str().encode() if backend is not None else datasets.fingerprint.Hasher.hash(tokenizer).encode())
    h.update(json.dumps([str(tokenizer.special_tokens_map), tokenizer.all_special_ids,
                         getattr(tokenizer, "legacy", None), len(tokenizer)]).encode())
    return h.hexdigest()


def cache_key(json_path: Path, tokenizer, template: ConversationTemplate, num_image_tokens: int, max_length: int,
              on_overlong: str, image_folder: Path | None) -> str:
    h = hashlib.sha256()
    with open(json_path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    h.update(json.dumps([tokenizer_fingerprint(tokenizer), repr(template), num_image_tokens, max_length, on_overlong,
                         str(image_folder.resolve()) if image_folder else None, FORMAT_VERSION]).encode())
    return h.hexdigest()


def collapse_image_runs(input_ids: list[int], labels: list[int], image_id: int) -> tuple[list[int], list[int], list[int]]:
    """Each run of consecutive `image_id` tokens -> one token (label kept from the run's first token) and its
    length; the inverse of `expand_image_runs`."""
    ids = np.asarray(input_ids, dtype=np.int64)
    is_image = ids == image_id
    if not is_image.any():
        return list(input_ids), list(labels), []
    before = np.concatenate(([False], is_image[:-1]))
    after = np.concatenate((is_image[1:], [False]))
    keep = ~(is_image & before)  # every id but the 2nd, 3rd, ... of a run
    runs = np.flatnonzero(is_image & ~after) - np.flatnonzero(is_image & ~before) + 1
    return ids[keep].tolist(), np.asarray(labels, dtype=np.int64)[keep].tolist(), runs.tolist()


def expand_image_runs(input_ids: torch.Tensor, labels: torch.Tensor, runs: list[int],
                      image_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(T',) collapsed ids/labels -> the full sequences: the i-th image id repeated runs[i] times."""
    if not runs:
        return input_ids, labels
    repeats = torch.ones_like(input_ids)
    repeats[input_ids == image_id] = torch.tensor(runs, dtype=repeats.dtype)
    return input_ids.repeat_interleave(repeats), labels.repeat_interleave(repeats)


def _image_stat(path: Path) -> list[int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


# (path, size, mtime_ns) -> None or the DataError: an image shared by many records is verified once per process.
_CHECKED_IMAGES: dict[tuple, DataError | None] = {}


def _process(batch: dict[str, list], indices: list[int], *, json_path: str, image_folder: str | None,
             processor: LlavaForkProcessor) -> dict[str, list]:
    """One map() batch: every record -> one row; a bad record's row holds its located error. Records are
    validated and their images checked one by one, then tokenized together (processor.tokenize_many)."""
    checked = _CHECKED_IMAGES
    folder = Path(image_folder) if image_folder else None
    image_id = image_token_id(processor.tokenizer)
    rows: list[dict[str, Any]] = []
    valid: list[tuple[dict[str, Any], dict[str, Any]]] = []  # (row, record) of records that passed the checks
    for text, index in zip(batch["record"], indices):
        record = json.loads(text)
        rid = record_id(record, index)
        row: dict[str, Any] = dict(sample_id=rid, input_ids=[], labels=[], image_runs=[], image="", modality_length=0,
                                   truncated=False, official_masked=False, error_reason="", error_message="")
        rows.append(row)
        try:
            validate_record(record, index, json_path)
            if record.get("image"):
                if folder is None:
                    raise DataError("has an image but no image folder was given", "missing image")
                path = folder / record["image"]
                key = (str(path), *(_image_stat(path) or [None]))
                if key not in checked:
                    try:
                        check_image(path)
                        checked[key] = None
                    except DataError as error:
                        checked[key] = error
                if checked[key] is not None:
                    raise checked[key].located(record_id=rid)
                row["image"] = record["image"]
            valid.append((row, record))
        except DataError as error:
            _fail(row, error, json_path)
    samples = processor.tokenize_many([record for _, record in valid])
    for (row, _), sample in zip(valid, samples):
        if isinstance(sample, DataError):
            _fail(row, sample, json_path)
            continue
        n = len(sample.input_ids)
        ids, labels, runs = collapse_image_runs(sample.input_ids, sample.labels, image_id)
        row.update(input_ids=ids, labels=labels, image_runs=runs, truncated=sample.truncated,
                   official_masked=sample.official_masked, modality_length=n if row["image"] else -n)
    return {name: [row[name] for row in rows] for name in FEATURES}


def _fail(row: dict[str, Any], error: DataError, json_path: str) -> None:
    error = error.located(json_path, row["sample_id"])
    row.update(error_reason=error.reason, error_message=str(error))


def _write_raw(json_path: Path, out: Path, batch_size: int = 10_000) -> tuple[datasets.Dataset, list[str]]:
    """The records' JSON texts -> a memory-mapped one-column Arrow file (map(num_proc) hands its workers
    file-backed shards, not pickled copies), and the image names they use. Streamed: one record parsed at a time."""
    schema = pa.schema([("record", pa.string())])
    images: set[str] = set()
    texts: list[str] = []
    with pa.OSFile(str(out), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        for text, record in iter_record_texts(json_path):
            texts.append(text)
            if isinstance(record, dict) and isinstance(record.get("image"), str) and record["image"]:
                images.add(record["image"])
            if len(texts) == batch_size:
                writer.write_batch(pa.record_batch([pa.array(texts, pa.string())], schema=schema))
                texts = []
        if texts:
            writer.write_batch(pa.record_batch([pa.array(texts, pa.string())], schema=schema))
    return datasets.Dataset.from_file(str(out)), sorted(images)


def _build(json_path: Path, image_folder: Path | None, target: Path, num_proc: int, fn_kwargs: dict) -> None:
    """Tokenize every record into `target` (written under a temporary name, then renamed: atomic)."""
    scratch = Path(tempfile.mkdtemp(prefix=".build-", dir=target.parent))
    try:
        raw, images = _write_raw(json_path, scratch / "raw.arrow")
        if len(raw):
            # Explicit cache files and fingerprints: our key decides reuse, datasets need not hash the tokenizer.
            rows = raw.map(_process, with_indices=True, batched=True, batch_size=256,
                           num_proc=num_proc if num_proc > 1 else None, remove_columns=["record"], features=FEATURES,
                           fn_kwargs=fn_kwargs, cache_file_name=str(scratch / "rows.arrow"),
                           new_fingerprint=f"{target.name}-rows", desc=f"tokenizing {json_path.name}")
        else:  # map() over no rows would not give them FEATURES' columns
            rows = datasets.Dataset.from_dict({name: [] for name in FEATURES}, features=FEATURES)
        # Bad rows are found from the Arrow column (no Python call per row); select() only writes an index map.
        is_bad = pc.not_equal(rows.data.column("error_reason"), "").to_numpy(zero_copy_only=False)
        bad, good = None, rows
        if is_bad.any():
            bad = rows.select(np.flatnonzero(is_bad), indices_cache_file_name=str(scratch / "bad.idx"))
            good = rows.select(np.flatnonzero(~is_bad), indices_cache_file_name=str(scratch / "good.idx"))
        good = good.remove_columns(["error_reason", "error_message"])
        report = {
            "records": len(rows),
            "bad": [] if bad is None else [{"id": i, "reason": r, "message": m} for i, r, m in
                                           zip(bad["sample_id"], bad["error_reason"], bad["error_message"])],
            "truncated": int(pc.sum(good.data.column("truncated")).as_py() or 0),
            "official_masked": int(pc.sum(good.data.column("official_masked")).as_py() or 0),
            "images": {} if image_folder is None else {name: _image_stat(image_folder / name) for name in images},
        }
        staged = scratch / "final"
        good.save_to_disk(str(staged), num_shards=None if len(good) else 1)  # 0 shards would not load again
        (staged / "report.json").write_text(json.dumps(report))
        del rows, good, bad, raw
        os.replace(staged, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


class ArrowSupervisedDataset(Dataset):
    """SupervisedDataset's contract (items, `.skipped`, `.truncated`, `.official_masked`, lengths),
    backed by a memory-mapped Arrow cache; see the module docstring. `num_proc` workers tokenize."""

    def __init__(self, json_path: str | Path, image_folder: str | Path | None, tokenizer, image_processor,
                 template: ConversationTemplate, num_image_tokens: int, max_length: int, on_bad_record: str = "error",
                 on_overlong: str = "error", *, num_proc: int = 1, cache_dir: str | Path | None = None) -> None:
        if on_bad_record not in BAD_RECORD_MODES:
            raise ValueError(f"on_bad_record must be one of {BAD_RECORD_MODES}, got {on_bad_record!r}")
        if on_overlong not in OVERLONG_MODES:
            raise ValueError(f"on_overlong must be one of {OVERLONG_MODES}, got {on_overlong!r}")
        self.json_path = Path(json_path)
        self.image_folder = Path(image_folder) if image_folder else None
        self.image_processor = image_processor
        self.image_id = image_token_id(tokenizer)
        self.processor = LlavaForkProcessor(tokenizer, template, num_image_tokens, image_processor, max_length,
                                            on_overlong)
        if not self.json_path.is_file():
            read_records(self.json_path)  # raises the usual "no such data file"
        key = cache_key(self.json_path, tokenizer, template, num_image_tokens, max_length, on_overlong,
                        self.image_folder)
        root = Path(cache_dir) if cache_dir else self.json_path.parent / CACHE_DIR_NAME
        try:
            root.mkdir(parents=True, exist_ok=True)
            if not os.access(root, os.W_OK):
                raise PermissionError("not writable")
        except OSError as e:
            raise DataError(f"cannot create the dataset cache {root} ({e}); set data.cache_dir to a writable folder",
                            "cache", source=self.json_path) from None
        self.cache_path = root / f"{self.json_path.stem}-{key[:16]}"
        fn_kwargs = dict(json_path=str(self.json_path), image_folder=str(self.image_folder) if self.image_folder
                         else None, processor=dataclasses.replace(self.processor, image_processor=None))
        with FileLock(str(self.cache_path) + ".lock"):
            if self.cache_path.is_dir() and not self._images_unchanged():
                logger.warning("%s: an image changed since the cache was built; rebuilding", self.cache_path)
                shutil.rmtree(self.cache_path)
            self.cached = self.cache_path.is_dir()
            if not self.cached:
                logger.info("%s: building the Arrow cache %s (num_proc=%d)", self.json_path, self.cache_path, num_proc)
                _build(self.json_path, self.image_folder, self.cache_path, num_proc, fn_kwargs)
        self.report = json.loads((self.cache_path / "report.json").read_text())
        self.data = datasets.load_from_disk(str(self.cache_path))
        self._report(on_bad_record, max_length)

    @classmethod
    def from_processor(cls, json_path: str | Path, image_folder: str | Path | None, processor: LlavaForkProcessor,
                       on_bad_record: str = "error", *, num_proc: int = 1,
                       cache_dir: str | Path | None = None) -> "ArrowSupervisedDataset":
        """The dataset of `processor`'s tokenizer, template, image processing, max_length and on_overlong."""
        return cls(json_path, image_folder, processor.tokenizer, processor.image_processor, processor.template,
                   processor.num_image_tokens, processor.max_length, on_bad_record, processor.on_overlong,
                   num_proc=num_proc, cache_dir=cache_dir)

    def _images_unchanged(self) -> bool:
        report = json.loads((self.cache_path / "report.json").read_text())
        folder = self.image_folder
        return all(_image_stat(folder / name) == stat for name, stat in report["images"].items()) if folder else True

    def _report(self, on_bad_record: str, max_length: int) -> None:
        bad = self.report["bad"]
        if bad and on_bad_record == "error":
            first = bad[0]
            if len(bad) > 1:
                logger.error("%s: %d bad records; the first is raised, the others:\n%s", self.json_path, len(bad),
                             "\n".join(b["message"] for b in bad[1:]))
            error = DataError(first["message"], first["reason"])
            raise error from None
        counts = Counter(b["reason"] for b in bad)
        self.skipped = dict(counts.most_common())
        for b in bad:
            logger.debug("skipping: %s", b["message"])
        if counts:
            detail = ", ".join(f"{n} {reason}" for reason, n in counts.most_common())
            logger.warning("%s: skipped %d of %d records: %s", self.json_path, counts.total(), self.report["records"],
                           detail)
        self.truncated = self.report["truncated"]
        self.official_masked = self.report["official_masked"]
        if self.truncated:
            logger.warning("%s: truncated %d of %d samples to max_length %d (data.on_overlong: truncate)",
                           self.json_path, self.truncated, len(self), max_length)
        if self.official_masked:
            logger.warning("%s: %d of %d samples would be fully masked by LLaVA's tokenization-mismatch rule "
                           "(they train here)", self.json_path, self.official_masked, len(self))
        logger.info("%s: %d records ready (%s)", self.json_path, len(self),
                    "cached" if self.cached else "built")

    def __len__(self) -> int:
        return self.data.num_rows

    @property
    def modality_lengths(self):
        """LLaVA's convention (positive with an image, negative text-only), a numpy view of the Arrow column."""
        return self.data.data.column("modality_length").to_numpy()

    @property
    def lengths(self):
        """Token count per sample (image tokens included), for group-by-length sampling."""
        return abs(self.modality_lengths)

    length = lengths

    def __getitem__(self, i: int) -> dict[str, Any]:
        row = self.data[int(i)]
        input_ids, labels = expand_image_runs(torch.tensor(row["input_ids"], dtype=torch.long),
                                              torch.tensor(row["labels"], dtype=torch.long), row["image_runs"],
                                              self.image_id)
        item: dict[str, Any] = {"input_ids": input_ids, "labels": labels, "sample_id": row["sample_id"]}
        if row["image"]:
            try:
                image = open_image(self.image_folder / row["image"], row["sample_id"])
            except DataError as error:  # the file changed since the cache checked it
                raise error.located(self.json_path) from None
            item["pixel_values"] = self.processor.image_tensor(image, row["sample_id"])  # (3, S, S)
        return item
