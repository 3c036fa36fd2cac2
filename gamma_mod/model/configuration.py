"""Config of a LLaVA-style model: a Llama decoder config plus the vision/projector fields.

Field names are LLaVA's (`mm_projector_type`, `mm_hidden_size`, `mm_vision_select_layer`, ...), so
LLaVA-1.5 / LLaVA-HR / gamma-MoD config.json files read unchanged. Unlike LLaVA, the vision tower
is described by `vision_config` (a CLIPVisionConfig dict) and built from it, so no hub lookup is
ever needed; `mm_vision_tower` is kept as the name of the weights it came from.
"""

from __future__ import annotations

from typing import Any

from transformers import CLIPVisionConfig, LlamaConfig

from ..mod.config import ModConfig

PROJECTOR_TYPES = ("linear", "mlp2x_gelu")


class LlavaLlamaConfig(LlamaConfig):
    model_type = "llava_llama"

    def __init__(
        self,
        vision_config: dict[str, Any] | CLIPVisionConfig | None = None,
        mm_vision_tower: str | None = None,
        mm_projector_type: str = "mlp2x_gelu",
        mm_hidden_size: int | None = None,
        mm_vision_select_layer: int = -2,
        mm_vision_select_feature: str = "patch",
        image_token_index: int | None = None,
        image_mean: list[float] | None = None,
        image_std: list[float] | None = None,
        image_aspect_ratio: str = "pad",
        mod: dict[str, Any] | None = None,
        **kwargs,
    ) -> None:
        if isinstance(vision_config, CLIPVisionConfig):
            vision_config = vision_config.to_dict()
        self.vision_config = vision_config
        self.mm_vision_tower = mm_vision_tower
        self.mm_projector_type = mm_projector_type
        self.mm_hidden_size = mm_hidden_size if mm_hidden_size is not None else (vision_config or {}).get("hidden_size")
        self.mm_vision_select_layer = mm_vision_select_layer
        self.mm_vision_select_feature = mm_vision_select_feature
        self.image_token_index = image_token_index
        # OpenAI CLIP normalisation, LLaVA's default.
        self.image_mean = image_mean or [0.48145466, 0.4578275, 0.40821073]
        self.image_std = image_std or [0.26862954, 0.26130258, 0.27577711]
        self.image_aspect_ratio = image_aspect_ratio
        self.mod = mod
        super().__init__(**kwargs)
        if mm_projector_type not in PROJECTOR_TYPES:
            raise ValueError(f"mm_projector_type must be one of {PROJECTOR_TYPES}, got {mm_projector_type!r}")
        if mm_vision_select_feature not in ("patch", "cls_patch"):
            raise ValueError(f"mm_vision_select_feature must be 'patch' or 'cls_patch', got {mm_vision_select_feature!r}")
        self.mod_config()  # validate early: a bad mod section is an error at load, not at forward

    def clip_vision_config(self) -> CLIPVisionConfig | None:
        return CLIPVisionConfig(**self.vision_config) if self.vision_config else None

    def mod_config(self) -> ModConfig | None:
        mod = ModConfig.from_dict(self.mod)
        if mod is not None:
            mod.validate_against(self.num_hidden_layers)
        return mod

    @property
    def num_image_tokens(self) -> int:
        vc = self.vision_config
        if not vc:
            return 0
        n = (vc["image_size"] // vc["patch_size"]) ** 2
        return n + 1 if self.mm_vision_select_feature == "cls_patch" else n


class ModLlavaLlamaConfig(LlavaLlamaConfig):
    """The released gamma-MoD checkpoints' `model_type`; same fields, loads into the same model."""

    model_type = "mod_llava_llama"

    def __init__(self, mod_enable=None, mod_mode=None, mod_layers_idx=None, capacity_factor=None,
                 router_aux_loss_coef=None, **kwargs) -> None:
        # The official config class takes the mod fields as top-level kwargs and stores a `mod` dict.
        flat = dict(mod_enable=mod_enable, mod_mode=mod_mode, mod_layers_idx=mod_layers_idx,
                    capacity_factor=capacity_factor, router_aux_loss_coef=router_aux_loss_coef)
        flat = {k: v for k, v in flat.items() if v is not None}
        if flat:
            kwargs["mod"] = {**(kwargs.get("mod") or {}), **flat}
        super().__init__(**kwargs)
