"""The MultimodalProcessor of the Hugging Face families (llava_hf, llava_onevision, qwen2_5_vl, qwen3_vl).

One record -> model inputs, built on transformers' own processor classes (LlavaProcessor,
LlavaOnevisionProcessor, Qwen2_5_VLProcessor, Qwen3VLProcessor) and the family's chat template:

1. LLaVA record -> chat messages: each human turn split at `<image>` / `<video>` into content parts, in order,
   text parts stripped (QwenLM/Qwen2.5-VL qwen-vl-finetune/qwenvl/data/data_processor.py `_build_messages`).
2. Render with the chat template, one piece per turn: prompt pieces (system/user/assistant header) and answer
   pieces (the text the template adds for an assistant message: answer + end-of-turn).
3. Images: the family's *Pil* image processor; each image placeholder replaced by the processor's own
   `replace_image_token` expansion (Qwen: grid_thw.prod() // merge_size**2 per image, dynamic resolution;
   OneVision: anyres base + unpadded + newline features; LLaVA: (crop // patch)**2 + CLS - 1).
   Videos: frames -> features here (transformers' video processors need torchvision, which we must not need),
   same layout as transformers 5.24's video processors (see `_qwen_video` / `_onevision_video`).
4. Tokenize the whole expanded text once; labels = the token where its first character lies inside an answer
   piece, IGNORE_INDEX elsewhere. Qwen-family tokens also get mm_token_type_ids (0 text, 1 image, 2 video) which
   the Qwen models need for M-RoPE.

Label masking follows each family's official fine-tuning code:
- qwen2_5_vl / qwen3_vl: qwen-vl-finetune `preprocess_qwen_visual` (QwenLM/Qwen2.5-VL, used for Qwen3-VL too):
  supervised = the answer, `<|im_end|>` and the "\\n" after it; everything else (system, user turns,
  `<|im_start|>assistant\\n`) masked. Reproduced exactly.
- llava_hf: LLaVA-1.5 `preprocess_v1` (haotian-liu/LLaVA llava/train/train.py): "USER: q ASSISTANT: a</s>USER: ...",
  supervised = " a</s>". The llava-hf chat template ends an assistant message with " " instead of "</s>"; we
  replace that trailing whitespace with the tokenizer's eos, which gives LLaVA's training text exactly.
- llava_onevision: LLaVA-NeXT `preprocess_qwen` (LLaVA-VL/LLaVA-NeXT llava/train/train.py) renders
  `<|im_start|>role\\ncontent<|im_end|>\\n` with system "You are a helpful assistant." and supervises the whole
  assistant turn INCLUDING its `<|im_start|>assistant\\n` header, and additionally unmasks every `<|im_start|>`,
  `<|im_end|>` and "\\n" token of system/user turns. Deviation: we supervise answer + `<|im_end|>` + "\\n" only
  (the Qwen rule): template tokens of prompts carry no answer and are not learned from the data.

Other deviations from transformers' processors (all forced by "no torchvision"):
- Qwen videos are resized with the IMAGE processor's size bounds (smart_resize per video, one size for all frames),
  not the video processor's; frames are padded to a multiple of temporal_patch_size by repeating the last one
  (as transformers does). Qwen2.5-VL's second_per_grid_ts = temporal_patch_size / fps.
- Qwen3-VL video placeholder: per temporal patch "<t seconds><|vision_start|><|video_pad|>*n<|vision_end|>" replaces
  the template's "<|vision_start|><|video_pad|><|vision_end|>" (Qwen3-VL's reference processor, transformers
  4.57); frame times = frame index / fps (fps = the record's "fps", else `video_fps`, default 2.0 = the Qwen3-VL
  video processor's sampling rate), averaged over each temporal patch.
- OneVision videos: each frame resized to the image processor's size (no crop), rescaled, normalised: (T, 3, H, W).

Tiny local processors (`build_tiny_processor`): a byte-level BPE tokenizer built with the `tokenizers` library,
vocab 512, special tokens at the FIXED ids in `TINY_TOKEN_IDS` (documented in /work/notes/tiny_token_ids.md),
image/video tokens at the end of the vocab; the family's Pil image processor with small sizes; the chat template.
Qwen / OneVision folders also carry a video_preprocessor_config.json so that with torchvision installed
`AutoProcessor.from_pretrained(folder)` gives the full transformers processor; without torchvision, transformers
5.24 cannot build those processor classes at all (its VideoProcessorMixin type check needs torchvision), so
`HFFamilyProcessor.from_pretrained` builds an image-only subclass of the same processor class.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoImageProcessor, AutoTokenizer, PretrainedConfig, PreTrainedTokenizerFast
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
from transformers.models.llava.processing_llava import LlavaProcessor
from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
    LlavaOnevisionImageProcessorPil,
)
from transformers.models.llava_onevision.processing_llava_onevision import LlavaOnevisionProcessor
from transformers.models.qwen2_5_vl.processing_qwen2_5_vl import Qwen2_5_VLProcessor
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil, smart_resize
from transformers.models.qwen3_vl.processing_qwen3_vl import Qwen3VLProcessor
from transformers.processing_utils import ProcessorMixin

from ..errors import DataError

IGNORE_INDEX = -100
IMAGE_TAG = "<image>"
VIDEO_TAG = "<video>"
TINY_VOCAB_SIZE = 512

__all__ = ["FAMILIES", "FAMILY_NAMES", "IGNORE_INDEX", "TINY_TOKEN_IDS", "TINY_VOCAB_SIZE", "HFFamilyProcessor",
           "build_tiny_processor", "family_of"]


# --------------------------------------------------------------------------------------------------- chat templates
# Written after each family's published chat template / training format (see the module docstring).

# llava-hf/llava-1.5-7b-hf chat_template: "USER: <image>\n{q} ASSISTANT: {a} " (system text rendered bare).
LLAVA_HF_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] != 'system' %}{{ message['role'].upper() + ': ' }}{% endif %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' ' }}{% endfor %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

# LLaVA-OneVision's training format (LLaVA-NeXT conv qwen_1_5 / preprocess_qwen): ChatML with a default system.
ONEVISION_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}{{ '<image>\n' }}"
    "{% elif content['type'] == 'video' %}{{ '<video>\n' }}"
    "{% else %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_QWEN_CONTENT = (
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{% elif content['type'] == 'video' %}{{ '<|vision_start|><|video_pad|><|vision_end|>' }}"
    "{% else %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
)

# Qwen/Qwen2.5-VL-*-Instruct chat_template: ChatML, default system "You are a helpful assistant.".
QWEN2_5_VL_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}" + _QWEN_CONTENT + "{{ '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Qwen/Qwen3-VL-*-Instruct chat_template (no tools / reasoning): ChatML, no default system message.
QWEN3_VL_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}" + _QWEN_CONTENT + "{{ '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


# ----------------------------------------------------------------------------------------------------- family specs
@dataclass(frozen=True)
class _FamilySpec:
    name: str
    processor_class: type[ProcessorMixin]
    hf_model_types: tuple[str, ...]
    image_token: str
    video_token: str | None
    # the llava-hf template ends an assistant message with " "; LLaVA-1.5 trained on "</s>" there
    answer_ends_with_eos: bool
    chat_template: str  # the tiny folders' template; real checkpoints bring their own
    tiny_special_ids: dict[str, int]  # token -> fixed id in the tiny tokenizer
    tiny_roles: dict[str, str]  # "pad" / "bos" / "eos" / "unk" -> token


_QWEN_TINY_IDS = {"<|endoftext|>": 0, "<|im_start|>": 1, "<|im_end|>": 2,
                  "<|vision_start|>": 508, "<|vision_end|>": 509, "<|image_pad|>": 510, "<|video_pad|>": 511}

FAMILIES: dict[str, _FamilySpec] = {
    "llava_hf": _FamilySpec(
        "llava_hf", LlavaProcessor, ("llava",), IMAGE_TAG, None, True, LLAVA_HF_TEMPLATE,
        {"<unk>": 0, "<s>": 1, "</s>": 2, "<pad>": 3, "<image>": 510},
        {"unk": "<unk>", "bos": "<s>", "eos": "</s>", "pad": "<pad>"}),
    "llava_onevision": _FamilySpec(
        "llava_onevision", LlavaOnevisionProcessor, ("llava_onevision",), IMAGE_TAG, VIDEO_TAG, False,
        ONEVISION_TEMPLATE,
        {"<|endoftext|>": 0, "<|im_start|>": 1, "<|im_end|>": 2, "<image>": 510, "<video>": 511},
        {"eos": "<|im_end|>", "pad": "<|endoftext|>"}),
    "qwen2_5_vl": _FamilySpec(
        "qwen2_5_vl", Qwen2_5_VLProcessor, ("qwen2_5_vl",), "<|image_pad|>", "<|video_pad|>", False,
        QWEN2_5_VL_TEMPLATE, _QWEN_TINY_IDS, {"eos": "<|im_end|>", "pad": "<|endoftext|>"}),
    "qwen3_vl": _FamilySpec(
        "qwen3_vl", Qwen3VLProcessor, ("qwen3_vl",), "<|image_pad|>", "<|video_pad|>", False,
        QWEN3_VL_TEMPLATE, _QWEN_TINY_IDS, {"eos": "<|im_end|>", "pad": "<|endoftext|>"}),
}
FAMILY_NAMES = tuple(FAMILIES)
TINY_TOKEN_IDS: dict[str, dict[str, int]] = {name: dict(spec.tiny_special_ids) for name, spec in FAMILIES.items()}


def family_of(model_type: str) -> str:
    for spec in FAMILIES.values():
        if model_type in spec.hf_model_types or model_type == spec.name:
            return spec.name
    raise ValueError(f"no HF-family processor for model_type {model_type!r}; known: {', '.join(FAMILY_NAMES)}")


# ------------------------------------------------------------- image-only processor classes (no torchvision needed)
def _image_only(cls: type[ProcessorMixin]) -> type[ProcessorMixin]:
    """`cls` without its video_processor attribute: transformers 5.24 type-checks that attribute against
    VideoProcessorMixin, which only exists with torchvision. The token attributes `cls.__init__` would set are
    set here the same way (tokenizer attribute first, else the class default), then the two-attribute
    ProcessorMixin init runs; `replace_image_token` etc. are inherited unchanged."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        if cls is LlavaOnevisionProcessor:
            self.num_image_tokens = kwargs.pop("num_image_tokens", None)
            self.vision_feature_select_strategy = kwargs.pop("vision_feature_select_strategy", None)
            self.vision_aspect_ratio = kwargs.pop("vision_aspect_ratio", "anyres_max_9")
            default_image, default_video = kwargs.pop("image_token", IMAGE_TAG), kwargs.pop("video_token", VIDEO_TAG)
        else:
            default_image, default_video = "<|image_pad|>", "<|video_pad|>"
        self.image_token = getattr(tokenizer, "image_token", None) or default_image
        self.video_token = getattr(tokenizer, "video_token", None) or default_video
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)
        if cls is Qwen3VLProcessor:
            self.vision_start_token = getattr(tokenizer, "vision_start_token", None) or "<|vision_start|>"
            self.vision_end_token = getattr(tokenizer, "vision_end_token", None) or "<|vision_end|>"
            self.vision_start_token_id = tokenizer.convert_tokens_to_ids(self.vision_start_token)
            self.vision_end_token_id = tokenizer.convert_tokens_to_ids(self.vision_end_token)

    return type(f"{cls.__name__}ImageOnly", (cls,), {"__init__": __init__, "__module__": __name__})


_IMAGE_ONLY = {cls: _image_only(cls) for cls in (LlavaOnevisionProcessor, Qwen2_5_VLProcessor, Qwen3VLProcessor)}


# ------------------------------------------------------------------------------------------------------ media input
def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _load_image(image: Any, media_root: Path | None, rid: str) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, (np.ndarray, torch.Tensor)):
        array = np.asarray(image.detach().cpu() if isinstance(image, torch.Tensor) else image)
        if array.ndim == 3 and array.shape[0] == 3 and array.shape[-1] != 3:
            array = array.transpose(1, 2, 0)  # (3, H, W) -> (H, W, 3)
        if array.ndim != 3 or array.shape[-1] != 3:
            raise DataError(f"an image array must be (H, W, 3) or (3, H, W), got {tuple(array.shape)}",
                            "bad image", record_id=rid)
        return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))
    path = Path(image)
    if media_root is not None and not path.is_absolute():
        path = Path(media_root) / path
    if not path.is_file():
        raise DataError(f"image not found: {path}", "missing image", record_id=rid)
    with Image.open(path) as opened:
        return opened.convert("RGB")


def _load_video(video: Any, media_root: Path | None, rid: str) -> np.ndarray:
    """(T, H, W, 3) uint8 frames from an array / tensor / list of images, or a path (a folder of frames or a .npy)."""
    if isinstance(video, (list, tuple)):
        frames = np.stack([np.asarray(_load_image(frame, media_root, rid)) for frame in video])
    elif isinstance(video, (np.ndarray, torch.Tensor)):
        frames = np.asarray(video.detach().cpu() if isinstance(video, torch.Tensor) else video)
        if frames.ndim == 4 and frames.shape[1] == 3 and frames.shape[-1] != 3:
            frames = frames.transpose(0, 2, 3, 1)  # (T, 3, H, W) -> (T, H, W, 3)
    else:
        # data/video.py owns reading frames from disk; imported here so in-memory frames never need it
        from ..data.video import load_video_frames

        path = Path(video)
        if media_root is not None and not path.is_absolute():
            path = Path(media_root) / path
        if not path.exists():
            raise DataError(f"video not found: {path}", "missing video", record_id=rid)
        frames = load_video_frames(path)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise DataError(f"video frames must be (T, H, W, 3) with T >= 1, got {tuple(frames.shape)}", "bad video",
                        record_id=rid)
    return np.clip(frames, 0, 255).astype(np.uint8)


def _normalize_frames(frames: np.ndarray, height: int, width: int, image_processor: Any) -> np.ndarray:
    """(T, H, W, 3) uint8 -> (T, 3, height, width) float32, resized / rescaled / normalised like the image processor."""
    resample = getattr(image_processor, "resample", Image.BICUBIC)
    out = []
    for frame in frames:
        img = Image.fromarray(frame)
        if img.size != (width, height):
            img = img.resize((width, height), resample=resample)
        out.append(np.asarray(img, dtype=np.float32).transpose(2, 0, 1))
    video = np.stack(out) * float(getattr(image_processor, "rescale_factor", 1 / 255))
    mean = np.asarray(image_processor.image_mean, dtype=np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(image_processor.image_std, dtype=np.float32).reshape(1, 3, 1, 1)
    return ((video - mean) / std).astype(np.float32)


def _size_pair(size: Any, key_h: str = "height", key_w: str = "width") -> tuple[int, int]:
    get = size.get if isinstance(size, dict) else lambda k, d=None: getattr(size, k, d)
    if get(key_h) and get(key_w):
        return int(get(key_h)), int(get(key_w))
    edge = int(get("shortest_edge"))
    return edge, edge


# ----------------------------------------------------------------------------------------------------- the processor
class HFFamilyProcessor:
    """MultimodalProcessor (see gamma_mod/data/processor.py) for the Hugging Face VLM families."""

    def __init__(self, family: str, processor: ProcessorMixin, *, video_fps: float = 2.0,
                 max_length: int | None = None) -> None:
        if family not in FAMILIES:
            raise ValueError(f"unknown family {family!r}; known: {', '.join(FAMILY_NAMES)}")
        self.family = family
        self.spec = FAMILIES[family]
        self.hf_processor = processor
        self.video_fps = float(video_fps)
        self.max_length = max_length
        self.chat_template = processor.chat_template or getattr(processor.tokenizer, "chat_template", None)
        if not self.chat_template:
            raise ValueError(f"{family} processor has no chat template (chat_template.jinja / .json missing)")
        tok = processor.tokenizer
        self.image_token = processor.image_token
        self.image_token_id = int(tok.convert_tokens_to_ids(self.image_token))
        self.video_token = self.spec.video_token
        self.video_token_id = int(tok.convert_tokens_to_ids(self.video_token)) if self.video_token else None
        if self.image_token_id == tok.unk_token_id or (self.video_token and self.video_token_id == tok.unk_token_id):
            raise ValueError(f"the {family} tokenizer lacks its image/video tokens {self.image_token!r} "
                             f"{self.video_token!r}")
        if tok.pad_token_id is None:
            raise ValueError(f"the {family} tokenizer has no pad token")

    # -------------------------------------------------------------------------------------------- construction
    @property
    def tokenizer(self):
        return self.hf_processor.tokenizer

    @property
    def image_processor(self):
        return self.hf_processor.image_processor

    @classmethod
    def from_pretrained(cls, folder: str | Path, *, family: str | None = None, **kwargs: Any) -> "HFFamilyProcessor":
        """Tokenizer + Pil image processor + chat template of an HF processor folder (a model folder or a tiny one)."""
        folder = Path(folder)
        proc_kwargs = _read_json(folder / "processor_config.json")
        family = family or _family_from_folder(folder, proc_kwargs)
        spec = FAMILIES[family]
        tokenizer = AutoTokenizer.from_pretrained(folder)
        image_processor = AutoImageProcessor.from_pretrained(folder, backend="pil")
        chat_template = _read_chat_template(folder) or getattr(tokenizer, "chat_template", None)
        allowed = {"patch_size", "vision_feature_select_strategy", "num_additional_image_tokens", "image_token",
                   "num_image_tokens", "vision_aspect_ratio", "video_token"}
        extra = {k: v for k, v in proc_kwargs.items() if k in allowed}
        if spec.processor_class is LlavaProcessor:
            processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                       chat_template=chat_template, **extra)
        else:
            processor = _IMAGE_ONLY[spec.processor_class](image_processor=image_processor, tokenizer=tokenizer,
                                                          chat_template=chat_template, **extra)
        return cls(family, processor, **kwargs)

    @classmethod
    def for_model(cls, model_or_config: Any, folder: str | Path, **kwargs: Any) -> "HFFamilyProcessor":
        """The processor of `folder`, its image sizes / patch sizes / grid pinpoints re-synced from the model's
        config and its image/video token ids checked against the config's."""
        config = getattr(model_or_config, "config", model_or_config)
        if not isinstance(config, PretrainedConfig):
            raise TypeError(f"for_model needs a model or a PretrainedConfig, got {type(model_or_config).__name__}")
        model_type = config.model_type.removeprefix("gamma_mod_").removeprefix("mod_")
        processor = cls.from_pretrained(folder, family=family_of(model_type), **kwargs)
        processor._sync_with(config)
        return processor

    def _sync_with(self, config: PretrainedConfig) -> None:
        vision, ip, proc = config.vision_config, self.image_processor, self.hf_processor
        if self.family == "llava_hf":
            ip.size = {"shortest_edge": vision.image_size}
            ip.crop_size = {"height": vision.image_size, "width": vision.image_size}
            proc.patch_size = vision.patch_size
            proc.vision_feature_select_strategy = config.vision_feature_select_strategy
            # CLIP/SigLIP towers differ by a CLS token; LlavaProcessor counts it in num_additional_image_tokens
            proc.num_additional_image_tokens = 0 if "siglip" in vision.model_type else 1
        elif self.family == "llava_onevision":
            ip.size = {"height": vision.image_size, "width": vision.image_size}
            ip.image_grid_pinpoints = [list(p) for p in config.image_grid_pinpoints]
            proc.num_image_tokens = (vision.image_size // vision.patch_size) ** 2
            proc.vision_feature_select_strategy = config.vision_feature_select_strategy
            proc.vision_aspect_ratio = config.vision_aspect_ratio
        else:
            ip.patch_size = vision.patch_size
            ip.merge_size = vision.spatial_merge_size
            ip.temporal_patch_size = vision.temporal_patch_size
        expected = {"image": _config_token(config, "image"), "video": _config_token(config, "video")}
        for kind, ours in (("image", self.image_token_id), ("video", self.video_token_id)):
            if expected[kind] is not None and ours is not None and expected[kind] != ours:
                raise ValueError(f"{self.family}: the tokenizer's {kind} token id is {ours} but the model config "
                                 f"says {expected[kind]}; processor and model do not belong together")

    def config_token_ids(self) -> dict[str, int]:
        """The token ids a model config built for this tokenizer must hold (specs.build_family_config overrides):
        vocab size, pad / eos (/ bos where the tokenizer has one), image / video (/ vision start, end) ids."""
        tok = self.tokenizer
        ids = {"vocab_size": len(tok), "pad_token_id": tok.pad_token_id, "eos_token_id": tok.eos_token_id,
               # Qwen tokenizers add no BOS; the text config then names the pad token (as Qwen's configs do)
               "bos_token_id": tok.bos_token_id if tok.bos_token_id is not None else tok.pad_token_id,
               "image_token_id": self.image_token_id}
        if self.video_token_id is not None:
            ids["video_token_id"] = self.video_token_id
        if self.family in ("qwen2_5_vl", "qwen3_vl"):
            ids["vision_start_token_id"] = int(tok.convert_tokens_to_ids("<|vision_start|>"))
            ids["vision_end_token_id"] = int(tok.convert_tokens_to_ids("<|vision_end|>"))
        return ids

    def save_pretrained(self, folder: str | Path) -> Path:
        """Write this processor (tokenizer, image processor with its current sizes, chat template) as an HF
        processor folder naming the real transformers class, so `from_pretrained(folder)` gives it back; a
        model folder gets it next to its weights (get_processor(model folder) then needs nothing else)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.hf_processor.save_pretrained(folder)
        _write_processor_config(folder, self.hf_processor, self.spec)
        return folder

    # --------------------------------------------------------------------------------------------- encoding
    def encode_conversation(self, record: dict, *, media_root: Path | None = None) -> dict[str, Any]:
        rid = str(record.get("id", "?")) if isinstance(record, dict) else "?"
        if not isinstance(record, dict):
            raise DataError(f"a record must be an object, got {type(record).__name__}", record_id=rid)
        turns = record.get("conversations")
        system = None
        if isinstance(turns, list) and turns and isinstance(turns[0], dict) and turns[0].get("from") == "system":
            system, turns = turns[0].get("value"), turns[1:]
        if not isinstance(turns, list) or not turns or len(turns) % 2:
            raise DataError("'conversations' must hold human/gpt pairs", "bad turns", record_id=rid)
        for i, turn in enumerate(turns):
            expected = "human" if i % 2 == 0 else "gpt"
            if not isinstance(turn, dict) or turn.get("from") != expected or not isinstance(turn.get("value"), str):
                raise DataError(f"turn {i} must be {{'from': '{expected}', 'value': str}}, got {turn!r:.80}",
                                "bad turns", record_id=rid)
            if expected == "gpt" and (IMAGE_TAG in turn["value"] or VIDEO_TAG in turn["value"]):
                raise DataError(f"turn {i} (an answer) holds an {IMAGE_TAG}/{VIDEO_TAG} tag", "bad turns",
                                record_id=rid)
        images = [_load_image(x, media_root, rid) for x in _as_list(record.get("image"))]
        videos = [_load_video(x, media_root, rid) for x in _as_list(record.get("video"))]
        messages = self._messages([(t["value"], "user" if t["from"] == "human" else "assistant") for t in turns],
                                  system, len(images), len(videos), rid)
        fps = float(record.get("fps", self.video_fps))
        return self._encode(messages, images, videos, fps, rid, generation_prompt=False)

    def encode_prompt(self, question: str, *, image: Any = None, video: Any = None, system: str | None = None,
                      fps: float | None = None) -> dict[str, Any]:
        images = [_load_image(x, None, "prompt") for x in _as_list(image)]
        videos = [] if video is None else [_load_video(video, None, "prompt")]
        n_img, n_vid = question.count(IMAGE_TAG), question.count(VIDEO_TAG)
        # a bare question with media gets the tags LLaVA-format data would hold: media first
        if videos and not n_vid:
            question = VIDEO_TAG + "\n" + question
        if images and not n_img:
            question = IMAGE_TAG * len(images) + "\n" + question
        messages = self._messages([(question, "user")], system, len(images), len(videos), "prompt")
        features = self._encode(messages, images, videos, fps or self.video_fps, "prompt", generation_prompt=True)
        features.pop("labels")
        return features

    def _messages(self, turns: list[tuple[str, str]], system: str | None, n_images: int, n_videos: int,
                  rid: str) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        if system is not None:
            messages.append({"role": "system", "content": [{"type": "text", "text": system}]})
        seen = {"image": 0, "video": 0}
        for value, role in turns:
            if role == "assistant":
                messages.append({"role": role, "content": [{"type": "text", "text": value}]})
                continue
            content = []
            for part in re.split(f"({re.escape(IMAGE_TAG)}|{re.escape(VIDEO_TAG)})", value):
                if part in (IMAGE_TAG, VIDEO_TAG):
                    kind = "image" if part == IMAGE_TAG else "video"
                    seen[kind] += 1
                    content.append({"type": kind})
                elif part.strip():
                    content.append({"type": "text", "text": part.strip()})
            messages.append({"role": role, "content": content})
        if seen["image"] != n_images:
            raise DataError(f"{seen['image']} {IMAGE_TAG} tag(s) but {n_images} image(s)", "image tag count",
                            record_id=rid)
        if seen["video"] != n_videos:
            raise DataError(f"{seen['video']} {VIDEO_TAG} tag(s) but {n_videos} video(s)", "video tag count",
                            record_id=rid)
        if n_videos and self.video_token is None:
            raise DataError(f"{self.family} has no video input", "video unsupported", record_id=rid)
        return messages

    def _render(self, messages: list[dict[str, Any]], generation_prompt: bool) -> str:
        if not messages:
            return ""
        return self.tokenizer.apply_chat_template(messages, chat_template=self.chat_template, tokenize=False,
                                                  add_generation_prompt=generation_prompt)

    def _pieces(self, messages: list[dict[str, Any]], generation_prompt: bool) -> list[tuple[str, bool]]:
        """The rendered conversation as (text, is_answer) pieces: each answer piece is what the template adds
        for an assistant message (answer + end of turn), found as the difference between the rendering up to its
        generation prompt and the rendering including it."""
        pieces: list[tuple[str, bool]] = []
        done = 0
        for j, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            before, through = self._render(messages[:j], True), self._render(messages[: j + 1], False)
            if not through.startswith(before) or len(before) < done:
                raise ValueError(f"the {self.family} chat template does not render a conversation as a prefix of "
                                 "its continuation; answers cannot be located for label masking")
            answer = through[len(before):]
            if self.spec.answer_ends_with_eos:
                answer = answer.rstrip() + self.tokenizer.eos_token
            pieces += [(before[done:], False), (answer, True)]
            done = len(through)
        pieces.append((self._render(messages, generation_prompt)[done:], False))
        return [(text, is_answer) for text, is_answer in pieces if text]

    def _encode(self, messages: list[dict[str, Any]], images: list[Image.Image], videos: list[np.ndarray],
                fps: float, rid: str, *, generation_prompt: bool) -> dict[str, Any]:
        pieces = self._pieces(messages, generation_prompt)
        vision, image_texts, video_texts = self._vision(images, videos, fps)
        # expand the placeholders in order, remembering where the answer pieces land
        token_group = [re.escape(self.image_token)]
        if self.video_token:
            if self.family == "qwen3_vl":
                token_group.insert(0, re.escape("<|vision_start|>" + self.video_token + "<|vision_end|>"))
            token_group.append(re.escape(self.video_token))
        pattern = re.compile("|".join(token_group))
        image_iter, video_iter = iter(image_texts), iter(video_texts)

        def expand(match: re.Match) -> str:
            try:
                return next(image_iter) if match.group(0) == self.image_token else next(video_iter)
            except StopIteration:
                raise DataError("the chat template rendered more image/video placeholders than media given",
                                "tag count", record_id=rid) from None

        text, spans = "", []
        for piece, is_answer in pieces:
            start = len(text)
            text += pattern.sub(expand, piece)
            if is_answer:
                spans.append((start, len(text)))
        if next(image_iter, None) is not None or next(video_iter, None) is not None:
            raise DataError("the chat template dropped an image/video placeholder", "tag count", record_id=rid)

        encoded = self.tokenizer(text, return_offsets_mapping=True, add_special_tokens=True)
        ids = encoded["input_ids"]
        labels = [IGNORE_INDEX] * len(ids)
        for i, (start, end) in enumerate(encoded["offset_mapping"]):
            if end > start and any(a <= start < b for a, b in spans):
                labels[i] = ids[i]
        if self.max_length is not None and len(ids) > self.max_length:
            raise DataError(f"{len(ids)} tokens, more than max_length {self.max_length}", "too long", record_id=rid)
        input_ids = torch.tensor(ids, dtype=torch.long)
        features: dict[str, Any] = {"input_ids": input_ids, "labels": torch.tensor(labels, dtype=torch.long)}
        if self.family in ("qwen2_5_vl", "qwen3_vl"):
            types = torch.zeros_like(input_ids)
            types[input_ids == self.image_token_id] = 1
            types[input_ids == self.video_token_id] = 2
            features["mm_token_type_ids"] = types
        features.update(vision)
        return features

    # ---------------------------------------------------------------------------------------------- vision
    def _vision(self, images: list[Image.Image], videos: list[np.ndarray],
                fps: float) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
        proc, out, image_texts, video_texts = self.hf_processor, {}, [], []
        if images:
            batch = [images] if self.family == "llava_onevision" else images  # one sample: batch_num_images = [N]
            processed = self.image_processor(batch, return_tensors="pt")
            image_texts = [proc.replace_image_token(processed, image_idx=i) for i in range(len(images))]
            out.update({k: v for k, v in processed.items() if k in ("pixel_values", "image_sizes", "image_grid_thw",
                                                                     "batch_num_images")})
            if "batch_num_images" in out and not isinstance(out["batch_num_images"], torch.Tensor):
                out["batch_num_images"] = torch.tensor(out["batch_num_images"], dtype=torch.long)
        if videos:
            if self.family == "llava_onevision":
                pixels = torch.stack([self._onevision_video(v) for v in videos])  # (V, T, 3, H, W)
                out["pixel_values_videos"] = pixels
                video_texts = [proc.replace_video_token({"pixel_values_videos": pixels}, video_idx=i)
                               for i in range(len(videos))]
            else:
                patches, grids = zip(*(self._qwen_video(v) for v in videos))
                out["pixel_values_videos"] = torch.cat(patches)
                out["video_grid_thw"] = torch.stack(grids)
                video_texts = [self._qwen_video_text(grid, len(v), fps) for grid, v in zip(grids, videos)]
                if self.family == "qwen2_5_vl":
                    tps = self.image_processor.temporal_patch_size
                    out["second_per_grid_ts"] = torch.tensor([tps / fps] * len(videos), dtype=torch.float32)
        return out, image_texts, video_texts

    def _qwen_video(self, frames: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(T, H, W, 3) -> patches (grid_t * grid_h * grid_w, 3 * tps * ps * ps) and grid_thw, in the layout of
        transformers' Qwen2VLVideoProcessor.patchify (merge-window-major within each temporal patch)."""
        ip = self.image_processor
        ps, merge, tps = ip.patch_size, ip.merge_size, ip.temporal_patch_size
        min_pixels, max_pixels = _size_pair(ip.size, "shortest_edge", "longest_edge")
        height, width = smart_resize(frames.shape[1], frames.shape[2], factor=ps * merge, min_pixels=min_pixels,
                                     max_pixels=max_pixels)
        video = _normalize_frames(frames, height, width, ip)  # (T, C, H, W)
        if pad := -len(video) % tps:  # repeat the last frame up to a whole temporal patch
            video = np.concatenate([video, np.repeat(video[-1:], pad, axis=0)])
        t, c = len(video), video.shape[1]
        gt, gh, gw = t // tps, height // ps, width // ps
        patches = video.reshape(gt, tps, c, gh // merge, merge, ps, gw // merge, merge, ps)
        patches = patches.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)  # (gt, gh/m, gw/m, m, m, C, tps, ps, ps)
        patches = patches.reshape(gt * gh * gw, c * tps * ps * ps)
        return torch.from_numpy(np.ascontiguousarray(patches)), torch.tensor([gt, gh, gw], dtype=torch.long)

    def _qwen_video_text(self, grid: torch.Tensor, num_frames: int, fps: float) -> str:
        merge = self.image_processor.merge_size
        per_frame = int(grid[1] * grid[2]) // merge**2
        if self.family == "qwen2_5_vl":  # Qwen2_5_VLProcessor.replace_video_token
            return self.video_token * (int(grid[0]) * per_frame)
        # Qwen3VLProcessor.replace_video_token: one "<t seconds>" + framed block per temporal patch
        tps = self.image_processor.temporal_patch_size
        indices = list(range(num_frames))
        indices += [indices[-1]] * (-len(indices) % tps)
        times = [(indices[i] + indices[i + tps - 1]) / 2 / fps for i in range(0, len(indices), tps)]
        return "".join(f"<{t:.1f} seconds><|vision_start|>{self.video_token * per_frame}<|vision_end|>"
                       for t in times[: int(grid[0])])

    def _onevision_video(self, frames: np.ndarray) -> torch.Tensor:
        """(T, H, W, 3) -> (T, 3, H', W') at the image processor's (square) size, as LlavaOnevisionVideoProcessor."""
        height, width = _size_pair(self.image_processor.size)
        return torch.from_numpy(_normalize_frames(frames, height, width, self.image_processor))

    # ---------------------------------------------------------------------------------------------- batching
    def collate(self, features: list[dict[str, Any]], *, padding_side: str = "right") -> dict[str, torch.Tensor]:
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        if not features:
            raise ValueError("collate needs at least one feature")
        width = max(len(f["input_ids"]) for f in features)
        batch_size = len(features)
        pad_id = self.tokenizer.pad_token_id
        batch: dict[str, torch.Tensor] = {
            "input_ids": torch.full((batch_size, width), pad_id, dtype=torch.long),
            "attention_mask": torch.zeros((batch_size, width), dtype=torch.long),
        }
        sequence_keys = {"input_ids": pad_id}
        if any("labels" in f for f in features):
            batch["labels"] = torch.full((batch_size, width), IGNORE_INDEX, dtype=torch.long)
            sequence_keys["labels"] = IGNORE_INDEX
        if any("mm_token_type_ids" in f for f in features):
            batch["mm_token_type_ids"] = torch.zeros((batch_size, width), dtype=torch.long)
            sequence_keys["mm_token_type_ids"] = 0
        for row, feature in enumerate(features):
            n = len(feature["input_ids"])
            where = slice(width - n, width) if padding_side == "left" else slice(0, n)
            batch["attention_mask"][row, where] = 1
            for key in sequence_keys:
                if key in feature:
                    batch[key][row, where] = feature[key]
        for key in ("pixel_values", "image_sizes", "batch_num_images", "image_grid_thw", "pixel_values_videos",
                    "video_grid_thw", "second_per_grid_ts"):
            parts = [f[key] for f in features if key in f]
            if not parts:
                continue
            if key == "pixel_values" and self.family == "llava_onevision":
                parts = _pad_dim1(parts)  # (N, patches, 3, H, W): anyres patch counts differ per image
            try:
                batch[key] = torch.cat(parts)
            except RuntimeError as error:
                raise DataError(f"cannot batch {key} of shapes {[tuple(p.shape) for p in parts]} ({self.family} "
                                "needs equal shapes here, e.g. videos of the same frame count)", "batch") from error
        return batch

    def decode(self, token_ids: Any) -> str:
        if isinstance(token_ids, torch.Tensor):
            token_ids = token_ids.tolist()
        return self.tokenizer.decode(token_ids, skip_special_tokens=True).strip()


def _pad_dim1(parts: list[torch.Tensor]) -> list[torch.Tensor]:
    most = max(p.shape[1] for p in parts)
    return [torch.nn.functional.pad(p, (0, 0, 0, 0, 0, 0, 0, most - p.shape[1])) for p in parts]


def _config_token(config: PretrainedConfig, kind: str) -> int | None:
    for name in (f"{kind}_token_id", f"{kind}_token_index"):
        value = getattr(config, name, None)
        if value is not None:
            return int(value)
    return None


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _read_chat_template(folder: Path) -> str | None:
    if (folder / "chat_template.jinja").is_file():
        return (folder / "chat_template.jinja").read_text()
    return _read_json(folder / "chat_template.json").get("chat_template")


def _family_from_folder(folder: Path, proc_config: dict[str, Any]) -> str:
    model_type = _read_json(folder / "config.json").get("model_type")
    if model_type:
        return family_of(model_type.removeprefix("gamma_mod_").removeprefix("mod_"))
    by_class = {spec.processor_class.__name__: name for name, spec in FAMILIES.items()}
    name = by_class.get(str(proc_config.get("processor_class", "")).removesuffix("ImageOnly"))
    if name is None:
        raise ValueError(f"{folder}: cannot tell the model family (no config.json model_type, processor_class "
                         f"{proc_config.get('processor_class')!r})")
    return name


# ----------------------------------------------------------------------------------------------- tiny local folders
# Words of the prompts our synthetic sets and templates use, so the tiny BPE learns merges for them.
_TINY_CORPUS = (
    "You are a helpful assistant. A chat between a curious human and an artificial intelligence assistant. "
    "USER: ASSISTANT: user assistant system Describe the image. What color is the shape? Which way does the red "
    "square move? left right up down. How many shapes appear? one two three four five zero. Is there a circle? "
    "yes no. red green blue yellow white black square circle triangle the a of in on is are seconds"
)


def _tiny_corpus() -> str:
    """_TINY_CORPUS plus every word of the synthetic image and video sets (questions, answers, captions), so the
    pipeline's one-word answers are one token each in every family's tiny tokenizer."""
    from ..data.synthetic import SYNTHETIC_VOCAB
    from ..data.synthetic_video import SYNTHETIC_VIDEO_VOCAB

    words = [*SYNTHETIC_VOCAB, *SYNTHETIC_VIDEO_VOCAB]
    # each word after a space and at a line start (ChatML answers follow "assistant\n" directly)
    return " ".join([_TINY_CORPUS, *words]) + "\n" + "\n".join(words)


def _tiny_tokenizer(spec: _FamilySpec):
    low = sorted((i, t) for t, i in spec.tiny_special_ids.items() if i < 256)
    high = {i: t for t, i in spec.tiny_special_ids.items() if i >= 256}
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=min(high) if high else TINY_VOCAB_SIZE,
                                  special_tokens=[t for _, t in low], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([_tiny_corpus()] * 4, trainer)
    for token_id in range(tok.get_vocab_size(), TINY_VOCAB_SIZE):  # reserved fillers up to the fixed high ids
        tok.add_special_tokens([AddedToken(high.get(token_id, f"<|reserved_{token_id}|>"), special=True,
                                           normalized=False)])
    roles = spec.tiny_roles
    if "bos" in roles:  # Llama tokenizers prepend BOS
        bos = roles["bos"]
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                           special_tokens=[(bos, spec.tiny_special_ids[bos])])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=4096,
                                   **{f"{role}_token": token for role, token in roles.items()})
    for token, token_id in spec.tiny_special_ids.items():
        if fast.convert_tokens_to_ids(token) != token_id or len(fast) != TINY_VOCAB_SIZE:
            raise AssertionError(f"tiny {spec.name} tokenizer: {token} got id {fast.convert_tokens_to_ids(token)}, "
                                 f"expected {token_id} (vocab {len(fast)})")
    return fast


def _write_processor_config(folder: Path, processor: ProcessorMixin, spec: _FamilySpec) -> None:
    """processor_config.json names the real transformers class, so the folder is a standard HF processor folder."""
    config_path = folder / "processor_config.json"
    proc_config = _read_json(config_path)
    proc_config["processor_class"] = spec.processor_class.__name__
    if spec.name == "llava_onevision":  # init kwargs of the real class, which the image-only subclass does not save
        proc_config.update(num_image_tokens=processor.num_image_tokens,
                           vision_aspect_ratio=processor.vision_aspect_ratio,
                           vision_feature_select_strategy=processor.vision_feature_select_strategy)
    config_path.write_text(json.dumps(proc_config, indent=2, sort_keys=True) + "\n")


def build_tiny_processor(family: str, folder: str | Path) -> Path:
    """Write a tiny processor folder for `family` (tokenizer, Pil image processor config, chat template) that
    `HFFamilyProcessor.from_pretrained(folder)` (and, for llava_hf or with torchvision, AutoProcessor) loads
    offline. Sizes: see /work/notes/tiny_token_ids.md and the module docstring."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; known: {', '.join(FAMILY_NAMES)}")
    spec, folder = FAMILIES[family], Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = _tiny_tokenizer(spec)
    video_config: dict[str, Any] | None = None
    if family == "llava_hf":
        image_processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
        processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=8,
                                   vision_feature_select_strategy="default", num_additional_image_tokens=1,
                                   chat_template=spec.chat_template)
    elif family == "llava_onevision":
        image_processor = LlavaOnevisionImageProcessorPil(
            size={"height": 32, "width": 32}, image_grid_pinpoints=[[32, 32], [32, 64], [64, 32], [64, 64]])
        processor = _IMAGE_ONLY[LlavaOnevisionProcessor](
            image_processor=image_processor, tokenizer=tokenizer, num_image_tokens=16,
            vision_feature_select_strategy="full", vision_aspect_ratio="anyres_max_9", chat_template=spec.chat_template)
        video_config = {"video_processor_type": "LlavaOnevisionVideoProcessor", "size": {"height": 32, "width": 32},
                        "do_sample_frames": False}
    else:
        image_processor = Qwen2VLImageProcessorPil(min_pixels=16 * 16, max_pixels=64 * 64, patch_size=8,
                                                   merge_size=2, temporal_patch_size=2)
        processor = _IMAGE_ONLY[spec.processor_class](image_processor=image_processor, tokenizer=tokenizer,
                                                      chat_template=spec.chat_template)
        video_config = {"video_processor_type": "Qwen2VLVideoProcessor" if family == "qwen2_5_vl"
                        else "Qwen3VLVideoProcessor", "size": {"shortest_edge": 16 * 16, "longest_edge": 64 * 64},
                        "patch_size": 8, "merge_size": 2, "temporal_patch_size": 2, "do_sample_frames": False}
    processor.save_pretrained(folder)
    _write_processor_config(folder, processor, spec)
    if video_config is not None:
        video_config.update(image_mean=list(image_processor.image_mean), image_std=list(image_processor.image_std),
                            processor_class=spec.processor_class.__name__)
        (folder / "video_preprocessor_config.json").write_text(json.dumps(video_config, indent=2) + "\n")
    return folder
