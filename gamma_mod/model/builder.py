"""Build a LLaVA-style model config/model from a YAML model spec (a built-in name or a YAML path), with
its pretrained parts (LLM, CLIP, ConvNeXt) loaded from local checkpoints when given (model/components.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ..packaged import CONFIG_DIR, resolve_config  # noqa: F401  (CONFIG_DIR re-exported)
from .configuration import LlavaLlamaConfig
from .llava_llama import LlavaLlamaForCausalLM

_SECTIONS = {"text", "vision", "tower", "projector", "mod"}
# "tower": the LLaVA-HR / Mini-Gemini tower fields of LlavaLlamaConfig (vision_tower_type, vision_config_hr,
# input_image_size, image_size_aux, image_grid, image_global, weight names); absent for LLaVA-1.5.


def load_model_spec(spec: str | Path | dict[str, Any]) -> dict[str, Any]:
    """A dict, a YAML path, or the name of a built-in spec ("tiny", see gamma_mod/configs/model/)."""
    if isinstance(spec, dict):
        data = spec
    else:
        data = yaml.safe_load(resolve_config("model", spec).read_text()) or {}
    if "family" in data:
        raise ValueError(f"model spec {spec!r} is a family spec (family: {data['family']}), built by "
                         "gamma_mod.families.specs, not a LLaVA-fork spec")
    unknown = set(data) - _SECTIONS
    if unknown:
        raise ValueError(f"model spec {spec!r}: unknown sections {sorted(unknown)} (allowed: {sorted(_SECTIONS)})")
    return data


def build_config(spec: str | Path | dict[str, Any], *, vocab_size: int, image_token_index: int,
                 pad_token_id: int, bos_token_id: int, eos_token_id: int,
                 image: dict[str, Any] | None = None) -> LlavaLlamaConfig:
    """`image`: model-config fields set over the spec's (input_image_size, image_aspect_ratio, image_size_aux,
    image_grid, image_global; see gamma_mod.train.args.ImageArgs)."""
    data = load_model_spec(spec)
    return LlavaLlamaConfig(
        **data.get("text", {}),
        vision_config=data.get("vision"),
        **{**data.get("tower", {}), **(image or {})},
        **data.get("projector", {}),
        mod=data.get("mod"),
        vocab_size=vocab_size,
        image_token_index=image_token_index,
        pad_token_id=pad_token_id,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
    )


def build_model(spec, **token_ids) -> LlavaLlamaForCausalLM:
    """A randomly initialised model from a spec; token ids come from the tokenizer (see data.tokenizer)."""
    return LlavaLlamaForCausalLM(build_config(spec, **token_ids))


def build_pretrained_model(spec, components: dict[str, str], *, image: dict[str, Any] | None = None,
                           **token_ids) -> LlavaLlamaForCausalLM:
    """A model from a spec whose pretrained parts come from local checkpoints: `components` maps
    llm / clip / convnext to an HF Llama folder, an HF CLIP folder and a timm / open_clip ConvNeXt
    checkpoint (gamma_mod.model.components; every tensor checked). Parts not given stay random."""
    from .components import load_components

    model = LlavaLlamaForCausalLM(build_config(spec, image=image, **token_ids))
    load_components(model, components)
    return model
