"""Model families: one adapter per family, a registry keyed by name and config.model_type.

    get_family(config | model | "qwen2_5_vl" | "gamma_mod_qwen2_5_vl") -> FamilyAdapter

Importing this package also registers the MoD twins of the Hugging Face families
(gamma_mod/families/modeling.py) with transformers' Auto classes, so a saved MoD model loads with
`AutoModelForImageTextToText.from_pretrained(folder)` (or AutoModelForCausalLM) and no
trust_remote_code.
"""

from __future__ import annotations

from typing import Any

from .base import FamilyAdapter, resolve_path
from .llava_fork import LLAVA_FORK
from .llava_hf import LLAVA_HF
from .llava_onevision import LLAVA_ONEVISION
from .qwen2_5_vl import QWEN2_5_VL
from .qwen3_vl import QWEN3_VL

FAMILIES: dict[str, FamilyAdapter] = {}
_BY_MODEL_TYPE: dict[str, FamilyAdapter] = {}


class UnknownFamilyError(ValueError):
    """A model, config or name that no registered family answers to."""


def register_family(adapter: FamilyAdapter) -> FamilyAdapter:
    if adapter.name in FAMILIES:
        raise ValueError(f"model family {adapter.name!r} is already registered")
    taken = [t for t in adapter.model_types if t in _BY_MODEL_TYPE]
    if taken:
        raise ValueError(f"model family {adapter.name!r}: model_type {taken} already belongs to "
                         f"{_BY_MODEL_TYPE[taken[0]].name!r}")
    FAMILIES[adapter.name] = adapter
    for model_type in adapter.model_types:
        _BY_MODEL_TYPE[model_type] = adapter
    return adapter


for _adapter in (LLAVA_FORK, LLAVA_HF, LLAVA_ONEVISION, QWEN2_5_VL, QWEN3_VL):
    register_family(_adapter)


def get_family(what: Any) -> FamilyAdapter:
    """The adapter of a config, a model (its config), a model_type or a family name."""
    if isinstance(what, FamilyAdapter):
        return what
    if isinstance(what, str):
        key = what
    else:
        config = getattr(what, "config", what)
        key = getattr(config, "model_type", None)
        if key is None:
            raise UnknownFamilyError(f"{type(what).__name__} is neither a model, a config nor a family name")
    adapter = FAMILIES.get(key) or _BY_MODEL_TYPE.get(key)
    if adapter is None:
        raise UnknownFamilyError(f"no model family for {key!r}; known families: {', '.join(FAMILIES)} "
                                 f"(model types: {', '.join(sorted(_BY_MODEL_TYPE))})")
    return adapter


from .modeling import (  # noqa: E402  (registers the MoD twins with the Auto classes)
    ModFamilyConfigMixin,
    ModFamilyModelMixin,
    convert_family_to_mod,
    is_mod_family_model,
    load_family_model,
    mod_twin_classes,
)

__all__ = [
    "FAMILIES", "FamilyAdapter", "ModFamilyConfigMixin", "ModFamilyModelMixin", "UnknownFamilyError",
    "convert_family_to_mod", "get_family", "is_mod_family_model", "load_family_model", "mod_twin_classes",
    "register_family", "resolve_path",
]
