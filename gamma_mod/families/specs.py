"""Model specs for the Hugging Face families: a YAML naming the family and the kwargs of that family's
OWN transformers config class, so a spec builds exactly the model `from_pretrained` would build.

    family: qwen2_5_vl              # llava_hf | llava_onevision | qwen2_5_vl | qwen3_vl
    config:                         # kwargs of Qwen2_5_VLConfig (LlavaConfig, LlavaOnevisionConfig, Qwen3VLConfig)
      image_token_id: 510
      text_config: {hidden_size: 64, num_key_value_heads: 2, ...}
      vision_config: {depth: 2, ...}
    mod: {mod_layers_idx: [1, 2], capacity_factor: 0.5}   # optional: the MoD section for convert_to_mod

Built-in specs live in gamma_mod/configs/model/ next to the LLaVA-fork specs (which have `text:`/`vision:`
sections instead of `family:`): tiny twins `<family>_tiny.yaml` (random init, CPU tests) and real-size
configs whose values are the published config.json ones (`llava_hf_7b`, `llava_onevision_qwen2_7b`,
`qwen2_5_vl_7b`, `qwen3_vl_8b`; tests/test_family_specs.py checks their parameter counts on the meta device
against the published totals).

Tiny twins' token ids: a 512-token vocabulary whose last ids are the family's special tokens, in the
same order as the real tokenizer (a tiny tokenizer appends its special tokens after 512 - n plain ids):
    llava_hf         bos 1, eos 2, pad 510, <image> 511                      (real: 1, 2, 32001, 32000)
    llava_onevision  <|endoftext|> 507 (bos, pad), <|im_start|> 508, <|im_end|> 509 (eos),
                     <image> 510, <video> 511                               (real: 151643 .. 151647)
    qwen2_5_vl,      <|endoftext|> 504 (bos, pad), <|im_start|> 505, <|im_end|> 506 (eos),
    qwen3_vl         <|vision_start|> 507, <|vision_end|> 508, <|vision_pad|> 509,
                     <|image_pad|> 510, <|video_pad|> 511                   (real: 151643 .. 151645, 151652 .. 151656)
A tokenizer with other ids passes them to `build_family_config(spec, image_token_id=..., vocab_size=...)`.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from huggingface_hub.errors import StrictDataclassFieldValidationError
from transformers import PreTrainedConfig, PreTrainedModel

from ..errors import ConfigError
from ..mod.config import ModConfig
from ..packaged import resolve_config

# family -> (config class, model class) in `transformers`; names, imported when used.
FAMILY_CLASSES: dict[str, tuple[str, str]] = {
    "llava_hf": ("LlavaConfig", "LlavaForConditionalGeneration"),
    "llava_onevision": ("LlavaOnevisionConfig", "LlavaOnevisionForConditionalGeneration"),
    "qwen2_5_vl": ("Qwen2_5_VLConfig", "Qwen2_5_VLForConditionalGeneration"),
    "qwen3_vl": ("Qwen3VLConfig", "Qwen3VLForConditionalGeneration"),
}
_SECTIONS = ("family", "config", "mod")
# Overrides build_family_config accepts: the ids a tokenizer decides. Where each goes is the family's
# own layout: a field of the top-level config (image/video/vision ids), else the text config.
TOKEN_FIELDS = ("vocab_size", "pad_token_id", "bos_token_id", "eos_token_id", "image_token_id",
                "video_token_id", "vision_start_token_id", "vision_end_token_id")
# Keys every PreTrainedConfig consumes although they are not dataclass fields of every class
# (generation ids, legacy rope keys, the sub-config selector).
_GENERIC_KEYS = {"model_type", "bos_token_id", "eos_token_id", "pad_token_id", "sep_token_id",
                 "decoder_start_token_id", "tie_word_embeddings", "rope_theta", "rope_scaling", "torch_dtype"}


class FamilySpecError(ConfigError):
    """A bad family spec; the message names the spec (file) and what is wrong."""


@dataclass(frozen=True)
class FamilySpec:
    family: str
    config: dict[str, Any]
    mod: dict[str, Any] | None = None
    source: str = "<dict>"  # the YAML path or "<dict>", for error messages

    def __post_init__(self) -> None:
        if self.family not in FAMILY_CLASSES:
            raise FamilySpecError(f"model spec {self.source}: family {self.family!r} is not one of "
                                  f"{', '.join(FAMILY_CLASSES)}")
        if not isinstance(self.config, dict):
            raise FamilySpecError(f"model spec {self.source}: `config` must be a mapping of "
                                  f"{FAMILY_CLASSES[self.family][0]} kwargs, got {type(self.config).__name__}")
        if self.mod is not None and not isinstance(self.mod, dict):
            raise FamilySpecError(f"model spec {self.source}: `mod` must be a mapping, got {type(self.mod).__name__}")

    @property
    def config_class(self) -> type[PreTrainedConfig]:
        return _transformers_class(FAMILY_CLASSES[self.family][0])

    @property
    def model_class(self) -> type[PreTrainedModel]:
        return _transformers_class(FAMILY_CLASSES[self.family][1])

    def mod_config(self) -> ModConfig | None:
        """The `mod` section as a validated ModConfig (checked against the text model's layer count)."""
        layers = build_family_config(self).get_text_config().num_hidden_layers
        try:
            mod = ModConfig.from_dict(self.mod)
            if mod is not None:
                mod = mod.resolve(layers)
                mod.validate_against(layers)
        except (ConfigError, TypeError) as error:
            raise FamilySpecError(f"model spec {self.source}: bad `mod` section: {error}") from error
        return mod


def is_family_spec(spec: str | Path | dict[str, Any]) -> bool:
    """True for a family spec (has `family:`), False for a LLaVA-fork spec (gamma_mod.model.builder)."""
    if isinstance(spec, FamilySpec):
        return True
    data = spec if isinstance(spec, dict) else _read_yaml(resolve_config("model", spec))
    return isinstance(data, dict) and "family" in data


def load_family_spec(spec: str | Path | dict[str, Any] | FamilySpec) -> FamilySpec:
    """A FamilySpec from a built-in name ("qwen2_5_vl_tiny"), a YAML path, a dict or a FamilySpec.

    Unknown sections, unknown config keys (typos) and a bad `mod` section are FamilySpecError naming
    the file and the key."""
    if isinstance(spec, FamilySpec):
        return spec
    if isinstance(spec, dict):
        data, source = spec, "<dict>"
    else:
        path = resolve_config("model", spec)
        data, source = _read_yaml(path), str(path)
    if not isinstance(data, dict) or "family" not in data:
        raise FamilySpecError(f"model spec {source}: not a family spec (no `family:`; a LLaVA-fork spec with "
                              "text/vision sections is built by gamma_mod.model.builder)")
    unknown = set(data) - set(_SECTIONS)
    if unknown:
        raise FamilySpecError(f"model spec {source}: unknown sections {sorted(unknown)} (allowed: {list(_SECTIONS)})")
    result = FamilySpec(family=data["family"], config=dict(data.get("config") or {}), mod=data.get("mod"),
                        source=source)
    _check_keys(result)
    result.mod_config()  # a bad mod section is an error at load
    return result


def build_family_config(spec: str | Path | dict[str, Any] | FamilySpec, **token_ids: Any) -> PreTrainedConfig:
    """The family's own config (LlavaConfig, ..., Qwen3VLConfig) from a spec, with token ids set over the
    spec's: any of TOKEN_FIELDS, each put where the family keeps it (image/video ids on the top-level
    config, vocab/bos/eos/pad on the text config)."""
    spec = load_family_spec(spec)
    cls = spec.config_class
    kwargs = _deep_copy(spec.config)
    top_fields = _field_names(cls)
    for key, value in token_ids.items():
        if key not in TOKEN_FIELDS:
            raise FamilySpecError(f"model spec {spec.source}: override {key!r} is not a token field "
                                  f"(accepted: {', '.join(TOKEN_FIELDS)})")
        name = cls.attribute_map.get(key, key)  # LLaVA keeps image_token_id as image_token_index
        if name in top_fields:
            kwargs[name] = value
        elif key in ("video_token_id", "vision_start_token_id", "vision_end_token_id"):
            raise FamilySpecError(f"model spec {spec.source}: family {spec.family} has no {key}")
        else:
            kwargs.setdefault("text_config", {})[key] = value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError, StrictDataclassFieldValidationError) as error:
        raise FamilySpecError(f"model spec {spec.source}: {cls.__name__} rejects the config: {error}") from error


def build_family_model(spec: str | Path | dict[str, Any] | FamilySpec, *, device: str | torch.device | None = None,
                       **token_ids: Any) -> PreTrainedModel:
    """The plain HF model of a spec, randomly initialised (seed the RNG first for a reproducible one).
    `device="meta"`: shapes only, no memory (parameter counts of real-size specs)."""
    spec = load_family_spec(spec)
    config = build_family_config(spec, **token_ids)
    if device is None:
        return spec.model_class(config)
    with torch.device(device):
        return spec.model_class(config)


def count_parameters(spec: str | Path | dict[str, Any] | FamilySpec) -> int:
    """Parameters of the plain model of a spec, counted on the meta device (tied weights once)."""
    model = build_family_model(spec, device="meta")
    return sum(p.numel() for p in model.parameters())


def _check_keys(spec: FamilySpec) -> None:
    """Every key of `config` (and of its text/vision sub-configs) is one the config class consumes:
    transformers accepts any kwarg silently, so a typo would otherwise be a default value."""
    config = build_family_config(spec)
    for owner, keys in [(config, spec.config), (config.get_text_config(), spec.config.get("text_config") or {}),
                        (getattr(config, "vision_config", None), spec.config.get("vision_config") or {})]:
        if owner is None:
            continue
        cls = type(owner)
        known = _field_names(cls) | set(cls.attribute_map) | _GENERIC_KEYS
        unknown = sorted(set(keys) - known)
        if unknown:
            where = "config" if owner is config else f"config.{cls.base_config_key or 'sub_config'}"
            raise FamilySpecError(f"model spec {spec.source}: unknown key(s) {unknown} in {where} "
                                  f"({cls.__name__} has no such field)")


def _field_names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()


def _transformers_class(name: str) -> type:
    return getattr(importlib.import_module("transformers"), name)


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise FamilySpecError(f"model spec {path}: not valid YAML: {error}") from error


def _deep_copy(value: Any) -> Any:
    # Config classes keep (and mutate) the dicts they are given: never hand them the spec's own.
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value
