"""The ONE prompt + image encoder: training features, generation prompts and batches for every family.

    MultimodalProcessor (Protocol)   what training, eval, ARank, speed and skip maps ask of a family:
        encode_conversation(record)  LLaVA-format record -> input_ids (T,), labels (T,), vision fields
        encode_prompt(question, image=..)  generation prompt (assistant turn opened), no labels
        collate(features, padding_side)    (B, T) input_ids / attention_mask / labels, vision fields joined
        decode(ids), tokenizer
    LlavaForkProcessor               our LLaVA-1.5 / LLaVA-HR / MGM classes (model_type llava_llama,
                                     mod_llava_llama, mod_mgm): gamma_mod.data.preprocess (LLaVA's
                                     tokenization and label masking) + data.templates + the tower's
                                     ImageProcessor; vision field: pixel_values (N, 3, S, S)
    get_processor(folder | model | config)  dispatch on config.model_type: the fork here, every other
                                     model_type to gamma_mod.families.processing.HFFamilyProcessor

The fork's rules are LLaVA's (haotian-liu/LLaVA llava/train/train.py preprocess_v1 / preprocess_plain for
training, llava/eval/model_vqa*.py for prompts); the text is exactly what preprocess.tokenize_record and
preprocess.encode_prompt build (tests/test_official_tokenization.py pins the ids). What the processor adds,
so every caller poses a question the same way: with an image and no `<image>` in the question, the tag is
put first as "<image>\\n" + question (LLaVA's model_vqa layout); without an image (or without a vision
tower) the tags are removed and the text stripped; more than one tag for one image is an error.
Padding: right for training (LLaVA's collator), left for generation (every row's next token at -1).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from PIL import Image

from .batched import tokenize_records
from .formats import IMAGE_TAG, DataError, record_id, validate_record
from .images import open_image
from .preprocess import IGNORE_INDEX, OVERLONG_MODES, TokenizedSample, encode_prompt, tokenize_record
from .templates import ConversationTemplate, get_template

__all__ = ["FORK_MODEL_TYPES", "IGNORE_INDEX", "LlavaForkProcessor", "MultimodalProcessor", "collate_features",
           "get_processor", "pose_question"]

PADDING_SIDES = ("right", "left")
# config.model_type of our own LLaVA-style classes (gamma_mod.model.configuration).
FORK_MODEL_TYPES = ("llava_llama", "mod_llava_llama", "mod_mgm")


@runtime_checkable
class MultimodalProcessor(Protocol):
    """What a model family's processor must do (see the module docstring; docs/seam: issue #14)."""

    family: str

    def encode_conversation(self, record: dict, *, media_root: Path | None = None) -> dict[str, Any]:
        """A LLaVA-format record ({"id", optional "image" | "video", "conversations": [{"from", "value"}]})
        -> training features: input_ids (1-D LongTensor), labels (IGNORE_INDEX outside answers) and the
        family's vision fields. Errors name the record id and what is wrong."""
        ...

    def encode_prompt(self, question: str, *, image=None, video=None, system: str | None = None) -> dict[str, Any]:
        """A generation prompt (assistant turn opened): the same fields minus labels."""
        ...

    def collate(self, features: list[dict], *, padding_side: str = "right") -> dict[str, Any]:
        """Pad input_ids / labels / attention_mask; join the vision fields as the family's model expects."""
        ...

    def decode(self, token_ids) -> str:
        ...

    @property
    def tokenizer(self):
        ...


def pose_question(question: str, n_images: int) -> str:
    """The user turn for `question` with `n_images` images (0 or 1): the image tag placed LLaVA's way."""
    tags = question.count(IMAGE_TAG)
    if n_images == 0:
        # A text-only prompt (or a model without a vision tower): no image slot may remain.
        return question.replace(IMAGE_TAG, "").strip() if tags else question
    if n_images != 1:
        raise ValueError(f"the LLaVA fork takes one image per prompt, got {n_images}")
    if tags == 0:
        return f"{IMAGE_TAG}\n{question}"
    if tags > 1:
        raise ValueError(f"the question names {tags} {IMAGE_TAG} tags for one image: {question!r:.80}")
    return question


def _pad(rows: Sequence[torch.Tensor], value: int, width: int, padding_side: str) -> torch.Tensor:
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for b, row in enumerate(rows):
        n = len(row)
        if padding_side == "right":
            out[b, :n] = row
        else:
            out[b, width - n:] = row
    return out


def collate_features(features: Sequence[dict[str, Any]], pad_token_id: int | None,
                     padding_side: str = "right") -> dict[str, Any]:
    """The fork's batch: (B, T) input_ids (pad), attention_mask (0 at pads), labels (IGNORE_INDEX at pads,
    when every feature has labels), pixel_values (N_images, 3, S, S) of the rows that have one, in row
    order (the model fills image tokens row by row), sample_ids when every feature names one."""
    if padding_side not in PADDING_SIDES:
        raise ValueError(f"padding_side must be one of {PADDING_SIDES}, got {padding_side!r}")
    if not features:
        raise ValueError("collate: no features to batch")
    pad = pad_token_id if pad_token_id is not None else 0
    ids = [torch.as_tensor(f["input_ids"], dtype=torch.long) for f in features]
    width = max(len(row) for row in ids)
    out: dict[str, Any] = {
        "input_ids": _pad(ids, pad, width, padding_side),
        "attention_mask": _pad([torch.ones(len(row), dtype=torch.long) for row in ids], 0, width, padding_side),
    }
    if all("labels" in f for f in features):
        out["labels"] = _pad([torch.as_tensor(f["labels"], dtype=torch.long) for f in features], IGNORE_INDEX,
                             width, padding_side)
    if all("sample_id" in f for f in features):
        out["sample_ids"] = [f["sample_id"] for f in features]  # for error messages; the trainer pops it
    # A dataset item holds one image (3, S, S); encode_* give (N, 3, S, S): both join along the image axis.
    images = [f["pixel_values"] if f["pixel_values"].dim() == 4 else f["pixel_values"].unsqueeze(0)
              for f in features if f.get("pixel_values") is not None]
    if images:
        out["pixel_values"] = torch.cat(images)  # (N_images, 3, S, S)
    return out


@dataclass
class LlavaForkProcessor:
    """MultimodalProcessor of our LLaVA-style models. `image_processor` is None for a model without a
    vision tower. `max_length` / `on_overlong` apply to training conversations (preprocess.tokenize_record)."""

    tokenizer: Any
    template: ConversationTemplate
    num_image_tokens: int
    image_processor: Callable[[Image.Image], torch.Tensor] | None = None
    max_length: int = 2048  # LLaVA-1.5's model_max_length (train.args.DataArgs' default)
    on_overlong: str = "error"
    family: ClassVar[str] = "llava_fork"

    def __post_init__(self) -> None:
        if isinstance(self.template, str):
            self.template = get_template(self.template)
        if self.on_overlong not in OVERLONG_MODES:
            raise ValueError(f"on_overlong must be one of {OVERLONG_MODES}, got {self.on_overlong!r}")
        if self.max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {self.max_length}")

    @classmethod
    def from_config(cls, config, tokenizer, template: str | ConversationTemplate = "vicuna_v1",
                    max_length: int = 2048, on_overlong: str = "error") -> "LlavaForkProcessor":
        """The processor of a model with `config` (a LlavaLlamaConfig): its tower's image size and
        normalisation, its image-token count."""
        from ..model.vision.image_processing import ImageProcessor  # data/ sits below model/: import on use

        has_vision = bool(getattr(config, "vision_config", None))
        return cls(tokenizer=tokenizer, template=template,
                   num_image_tokens=config.num_image_tokens if has_vision else 0,
                   image_processor=ImageProcessor.from_model_config(config) if has_vision else None,
                   max_length=max_length, on_overlong=on_overlong)

    @property
    def has_vision(self) -> bool:
        return self.image_processor is not None

    @property
    def pad_token_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return pad if pad is not None else 0

    # -- pieces the datasets use (text up front, images lazily) ------------------------------------
    def tokenize(self, record: dict[str, Any]) -> TokenizedSample:
        """input_ids and labels of a validated record, images not opened (LLaVA's preprocess_v1 / _plain)."""
        return tokenize_record(record, self.tokenizer, self.template, self.num_image_tokens, self.max_length,
                               self.on_overlong)

    def tokenize_many(self, records: list[dict[str, Any]]) -> list[TokenizedSample | DataError]:
        """tokenize() of each validated record, in order (a record's DataError in its place), the
        tokenizer called once for all of them: the same ids (gamma_mod.data.batched)."""
        return tokenize_records(records, self.tokenizer, self.template, self.num_image_tokens, self.max_length,
                                self.on_overlong)

    def image_tensor(self, image: Image.Image | str | Path, rid: str | None = None) -> torch.Tensor:
        """One image (PIL, or a file opened here) -> (3, S, S) float pixels."""
        if self.image_processor is None:
            raise DataError("has an image but the model has no vision tower", "image without vision tower",
                            record_id=rid)
        if not isinstance(image, Image.Image):
            image = open_image(Path(image), rid)
        return self.image_processor(image)

    # -- MultimodalProcessor ----------------------------------------------------------------------
    def encode_conversation(self, record: dict, *, media_root: Path | None = None) -> dict[str, Any]:
        validate_record(record, 0)
        rid = record_id(record, 0)
        if record.get("video"):
            raise DataError("has a video; the LLaVA fork takes images only", "video unsupported", record_id=rid)
        sample = self.tokenize(record)
        features: dict[str, Any] = {
            "input_ids": torch.tensor(sample.input_ids, dtype=torch.long),
            "labels": torch.tensor(sample.labels, dtype=torch.long),
            "sample_id": rid,
        }
        if record.get("image"):
            if media_root is None:
                raise DataError("has an image but no image folder (media_root) was given", "missing image",
                                record_id=rid)
            features["pixel_values"] = self.image_tensor(Path(media_root) / record["image"], rid).unsqueeze(0)
        return features

    def prompt_text(self, question: str, *, n_images: int = 0, system: str | None = None) -> str:
        """The rendered generation prompt, image tag placed (see pose_question), before tokenization."""
        return self._template(system).render_prompt(pose_question(question, n_images))

    def encode_prompt(self, question: str, *, image=None, video=None, system: str | None = None) -> dict[str, Any]:
        """{"input_ids": (T,), "pixel_values": (1, 3, S, S) when `image` (PIL or a file) is given}."""
        if video is not None:
            raise ValueError("the LLaVA fork takes no video input")
        if image is not None and self.image_processor is None:
            raise ValueError("the model has no vision tower but an image was given")
        text = pose_question(question, 1 if image is not None else 0)
        ids = encode_prompt(self.tokenizer, self._template(system), text, self.num_image_tokens)
        features: dict[str, Any] = {"input_ids": torch.tensor(ids, dtype=torch.long)}
        if image is not None:
            features["pixel_values"] = self.image_tensor(image).unsqueeze(0)
        return features

    def collate(self, features: list[dict], *, padding_side: str = "right") -> dict[str, Any]:
        return collate_features(features, self.pad_token_id, padding_side)

    def __call__(self, features: list[dict]) -> dict[str, Any]:
        """A training collator (right padding): DataLoader(collate_fn=processor)."""
        return self.collate(features)

    def decode(self, token_ids) -> str:
        if isinstance(token_ids, torch.Tensor):
            token_ids = token_ids.tolist()
        return self.tokenizer.decode(token_ids, skip_special_tokens=True)

    def _template(self, system: str | None) -> ConversationTemplate:
        return self.template if system is None else dataclasses.replace(self.template, system=system)


def _model_type(source) -> tuple[str, Any]:
    """(model_type, config or None) of a folder, a model or a config, without loading weights."""
    config = getattr(source, "config", source)
    if isinstance(source, (str, Path)):
        path = Path(source) / "config.json"
        try:
            return str(json.loads(path.read_text()).get("model_type", "")), None
        except FileNotFoundError:
            raise DataError("no config.json: not a model folder", "missing file", source=source) from None
        except json.JSONDecodeError as e:
            raise DataError(f"not valid JSON ({e})", "bad json", source=path) from None
    return str(getattr(config, "model_type", "")), config


def get_processor(source, *, tokenizer=None, template: str | ConversationTemplate = "vicuna_v1",
                  max_length: int = 2048, on_overlong: str = "error", **kwargs: Any) -> MultimodalProcessor:
    """The processor for a model folder, a loaded model or its config, picked by config.model_type.

    Our LLaVA-fork types get a LlavaForkProcessor (template / max_length / on_overlong apply to it); every
    other model_type is a Hugging Face family, handled by gamma_mod.families.processing.HFFamilyProcessor
    (`HFFamilyProcessor.for_model`: the family's own tokenizer and chat template from the model folder, image and
    patch sizes re-synced from the model's config, token ids checked). For the fork, a model or config given
    without `tokenizer` needs one (it is loaded from a folder only); for a family, a loaded model or config needs
    `folder=` (the folder holding its processor files) unless it was loaded from one.
    """
    model_type, config = _model_type(source)
    if model_type in FORK_MODEL_TYPES:
        if config is None:
            from ..model.configuration import load_config  # model/ sits above data/

            config = load_config(source)
        if tokenizer is None:
            if not isinstance(source, (str, Path)):
                raise ValueError("get_processor: a loaded model or config needs tokenizer=...")
            from .tokenizer import load_tokenizer

            tokenizer = load_tokenizer(str(source))
        if kwargs:
            raise TypeError(f"get_processor: unknown options for the LLaVA fork: {sorted(kwargs)}")
        return LlavaForkProcessor.from_config(config, tokenizer, template, max_length, on_overlong)
    # Hugging Face families (llava-hf, LLaVA-OneVision, Qwen2.5-VL, Qwen3-VL): an optional layer above data/.
    try:
        from ..families.processing import HFFamilyProcessor
    except ImportError as e:
        raise ValueError(f"model_type {model_type!r} is not one of our LLaVA-fork types {FORK_MODEL_TYPES} and the "
                         f"Hugging Face family processors (gamma_mod.families.processing) are not available ({e})"
                         ) from None
    if tokenizer is not None:
        raise TypeError(f"get_processor: a {model_type} model's processor reads its own tokenizer and chat template "
                        "from the model folder; tokenizer= is for the LLaVA fork")
    if isinstance(source, (str, Path)):
        from transformers import AutoConfig

        return HFFamilyProcessor.for_model(AutoConfig.from_pretrained(str(source)), source, **kwargs)
    folder = kwargs.pop("folder", None) or getattr(config, "_name_or_path", "")
    if not folder or not Path(folder).is_dir():
        raise ValueError(f"get_processor: a loaded {model_type} model or config needs folder=... (the folder holding "
                         "its processor files: tokenizer, processor config, chat template)")
    return HFFamilyProcessor.for_model(source, folder, **kwargs)
