"""Config of a LLaVA-style model: a Llama decoder config plus the vision/projector fields.

Field names are LLaVA's (`mm_projector_type`, `mm_hidden_size`, `mm_vision_select_layer`, ...), so
LLaVA-1.5 / LLaVA-HR / gamma-MoD config.json files read unchanged. Unlike LLaVA, the vision tower
is described by `vision_config` (a CLIPVisionConfig dict) and built from it, so no hub lookup is
ever needed; `mm_vision_tower` is kept as the name of the weights it came from. Official configs
that only name their towers (`mm_vision_tower`, `vision_tower_slow`, `mm_vision_tower_aux`) resolve
to fixed architectures through `vision.presets` (no download).

Three tower families (`vision_tower_type`, inferred from the official fields when absent):
  clip      LLaVA-1.5: CLIP ViT (`vision_config`).
  llava_hr  LLaVA-HR (`is_multipath_encoder`): CLIP + ConvNeXt (`vision_config_hr`) fused by the
            MR-Adapter, input `input_image_size` px.
  mgm       Mini-Gemini (`mm_vision_tower_aux`): CLIP + ConvNeXt (`vision_config_hr`) with patch info
            mining, input `image_size_aux` px, `image_grid` x `image_grid` crops (+ `image_global`).
"""

from __future__ import annotations

from typing import Any

from transformers import CLIPVisionConfig, LlamaConfig

from ..mod.config import ModConfig, ModConfigError
from ..prune import PrunerConfigError, TokenPruner, build_pruner

PROJECTOR_TYPES = ("linear", "mlp2x_gelu")
VISION_TOWER_TYPES = ("clip", "llava_hr", "mgm")


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
        vision_tower_type: str | None = None,
        vision_config_hr: dict[str, Any] | None = None,
        vision_tower_slow: str | None = None,
        is_multipath_encoder: bool = False,
        input_image_size: int | None = None,
        mm_vision_tower_aux: str | None = None,
        image_size_aux: int | None = None,
        image_grid: int = 1,
        image_global: bool = False,
        prune: dict[str, Any] | None = None,
        **kwargs,
    ) -> None:
        from .vision.presets import clip_preset, convnext_preset

        if isinstance(vision_config, CLIPVisionConfig):
            vision_config = vision_config.to_dict()
        if vision_tower_type is None:
            vision_tower_type = "llava_hr" if is_multipath_encoder else "mgm" if mm_vision_tower_aux else "clip"
        if vision_tower_type not in VISION_TOWER_TYPES:
            raise ValueError(f"vision_tower_type must be one of {VISION_TOWER_TYPES}, got {vision_tower_type!r}")
        if vision_config is None and mm_vision_tower:
            vision_config = clip_preset(mm_vision_tower)
        hr_name = vision_tower_slow if vision_tower_type == "llava_hr" else mm_vision_tower_aux
        if vision_tower_type != "clip":
            if vision_config is None:
                raise ValueError(f"vision_tower_type {vision_tower_type!r} needs `vision_config` or `mm_vision_tower`")
            if vision_config_hr is None:
                if not hr_name:
                    field = "vision_tower_slow" if vision_tower_type == "llava_hr" else "mm_vision_tower_aux"
                    raise ValueError(f"vision_tower_type {vision_tower_type!r} needs `vision_config_hr` or `{field}`")
                vision_config_hr = convnext_preset(hr_name)
        self.vision_tower_type = vision_tower_type
        self.vision_config_hr = vision_config_hr
        self.vision_tower_slow = vision_tower_slow
        self.is_multipath_encoder = is_multipath_encoder or vision_tower_type == "llava_hr"
        # LLaVA-HR's default resolution is 1024 px; Mini-Gemini's default image_size_aux is 320.
        self.input_image_size = input_image_size if input_image_size is not None else (
            1024 if vision_tower_type == "llava_hr" else None)
        self.mm_vision_tower_aux = mm_vision_tower_aux
        self.image_size_aux = image_size_aux if image_size_aux is not None else (
            320 if vision_tower_type == "mgm" else None)
        self.image_grid = image_grid
        self.image_global = image_global
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
        # Inference-time token pruner (gamma_mod.prune), e.g. {"method": "fastv", "k": 2, "r": 0.5}; None: off.
        self.prune = prune
        super().__init__(**kwargs)
        if mm_projector_type not in PROJECTOR_TYPES:
            raise ValueError(f"mm_projector_type must be one of {PROJECTOR_TYPES}, got {mm_projector_type!r}")
        if mm_vision_select_feature not in ("patch", "cls_patch"):
            raise ValueError(f"mm_vision_select_feature must be 'patch' or 'cls_patch', got {mm_vision_select_feature!r}")
        self.mod_config()  # validate early: a bad mod section is an error at load, not at forward
        self.prune_config()

    def clip_vision_config(self) -> CLIPVisionConfig | None:
        return CLIPVisionConfig(**self.vision_config) if self.vision_config else None

    def mod_config(self) -> ModConfig | None:
        """The resolved `mod` section: an official mod_mode's implied layer choice and, in official
        compat mode, the layout of this model's vision tower filled in. `self.mod` stays as written."""
        mod = ModConfig.from_dict(self.mod)
        if mod is not None:
            mod = mod.resolve(self.num_hidden_layers, self.vision_tower_type)
            mod.validate_against(self.num_hidden_layers)
        return mod

    def set_mod_compat(self, compat: str | None) -> None:
        """Override `mod.compat` ("ours" / "official"; None leaves the config as it is)."""
        if compat is None:
            return
        if self.mod is None:
            raise ModConfigError(f"--compat {compat}: the model has no MoD layers (no `mod` section in its config)")
        self.mod = {**self.mod, "compat": compat}
        self.mod_config()

    def prune_config(self) -> TokenPruner | None:
        """The configured token pruner (gamma_mod.prune), checked against this model, or None."""
        pruner = build_pruner(self.prune)
        if pruner is not None:
            pruner.validate(self.num_hidden_layers)
            mod = self.mod_config()
            if mod is not None and mod.official:
                raise PrunerConfigError(f"{pruner.describe()}: token pruners need MoD layers with mod.compat 'ours' "
                                        "(the official mode's fixed routable region and renumbered positions assume "
                                        "the full sequence)")
        return pruner

    def set_prune(self, spec: str | dict[str, Any] | None) -> None:
        """Override `prune` with a spec ("fastv:K=2,R=0.5", a dict, or "none"/None to switch it off)."""
        pruner = build_pruner(spec)
        self.prune = pruner.to_dict() if pruner is not None else None
        self.prune_config()

    @property
    def num_image_tokens(self) -> int:
        """Image tokens per image, as the vision tower produces them (see vision.factory)."""
        from .vision.factory import num_image_tokens

        return num_image_tokens(self)

    @property
    def image_input_size(self) -> int | None:
        """Side in pixels of the square images the model takes (`pixel_values`)."""
        if not self.vision_config:
            return None
        if self.vision_tower_type == "llava_hr":
            return self.input_image_size
        if self.vision_tower_type == "mgm":
            return self.image_size_aux
        return self.vision_config["image_size"]


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


class ModMGMConfig(ModLlavaLlamaConfig):
    """gamma-MoD on Mini-Gemini (`model_type: mod_mgm`); the `mm_vision_tower_aux` field selects the
    Mini-Gemini tower, so it loads into the same model."""

    model_type = "mod_mgm"

    def __init__(self, **kwargs) -> None:  # explicit: transformers' config machinery needs an own __init__
        super().__init__(**kwargs)


def load_config(folder, compat: str | None = None) -> LlavaLlamaConfig:
    """`AutoConfig.from_pretrained(folder)` with `mod.compat` overridden; a bad `mod` section is an error
    naming the folder's config.json."""
    import os

    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(folder)
        if isinstance(config, LlavaLlamaConfig):
            config.set_mod_compat(compat)
        elif compat is not None:
            raise ModConfigError(f"--compat {compat}: model_type {config.model_type!r} is not a gamma-mod model")
    except (ModConfigError, PrunerConfigError) as e:
        raise type(e)(f"{os.path.join(str(folder), 'config.json')}: {e}") from None
    return config
