"""One entry point from a model config to its vision tower (`config.vision_tower_type`).

Every tower maps (N, 3, S, S) pixels to (N, num_image_tokens, hidden_size) features and exposes
`hidden_size` and `num_image_tokens`.
"""

from __future__ import annotations

from torch import nn

from .clip import CLIPVisionTower
from .llava_hr import LlavaHRVisionTower, llava_hr_fast_image_size
from .initialization import mark_initialized, owning_submodel  # noqa: F401  (re-exported)
from .mgm import MGMVisionTower


def build_vision_tower(config) -> nn.Module | None:
    """The tower `config` describes, or None for a text-only config (no `vision_config`)."""
    clip_config = config.clip_vision_config()
    if clip_config is None:
        return None
    kind = config.vision_tower_type
    if kind == "clip":
        return CLIPVisionTower(clip_config, config.mm_vision_select_layer, config.mm_vision_select_feature)
    if kind == "llava_hr":
        return LlavaHRVisionTower(clip_config, config.vision_config_hr, config.input_image_size)
    if kind == "mgm":
        return MGMVisionTower(
            clip_config, config.vision_config_hr, config.image_size_aux, config.image_grid, config.image_global,
            config.mm_vision_select_layer, config.mm_vision_select_feature,
        )
    raise ValueError(f"unknown vision_tower_type {kind!r}")


def num_image_tokens(config) -> int:
    """Image tokens per image, from the config alone (the data pipeline needs it without a model);
    each tower's `num_image_tokens` gives the same number (tested)."""
    clip = config.vision_config
    if not clip:
        return 0
    per_view = (clip["image_size"] // clip["patch_size"]) ** 2
    kind = config.vision_tower_type
    if kind == "llava_hr":
        size = llava_hr_fast_image_size(clip["patch_size"], clip["image_size"], config.input_image_size,
                                        config.vision_config_hr)
        return (size // clip["patch_size"]) ** 2
    if kind == "mgm":
        return per_view * (config.image_grid ** 2 + int(bool(config.image_global)))
    return per_view + 1 if config.mm_vision_select_feature == "cls_patch" else per_view
