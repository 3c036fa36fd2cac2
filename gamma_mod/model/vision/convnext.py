"""ConvNeXt trunk for the high-resolution branches (LLaVA-HR slow tower, Mini-Gemini aux tower).

Built on transformers' `ConvNextModel`, which needs neither timm nor torchvision. Official
checkpoints use timm / open_clip parameter names; `gamma_mod.model.checkpoints` maps them onto
these modules with an explicit table. Only the trunk is used (stem + 4 stages); the CLIP head of the
timm models is never run by either architecture.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import ConvNextConfig, ConvNextModel


def convnext_config(spec: dict) -> ConvNextConfig:
    """A ConvNextConfig from a dict (`hidden_sizes`, `depths`, `layer_norm_eps`, ...)."""
    spec = dict(spec)
    spec.setdefault("layer_scale_init_value", 1e-6)
    spec.setdefault("drop_path_rate", 0.0)
    spec.setdefault("hidden_act", "gelu")  # exact GELU, as timm's ConvNeXt
    spec.setdefault("patch_size", 4)
    spec["num_stages"] = len(spec["hidden_sizes"])
    return ConvNextConfig(**spec)


def build_convnext(spec: dict) -> ConvNextModel:
    """`ConvNextModel` trunk (stem + stages, no head norm) whose LayerNorms all use `layer_norm_eps`.

    transformers hard-codes eps=1e-6 in the stem, downsampling and block norms (only the final norm
    reads the config); timm's convnext_xxlarge uses 1e-5 everywhere, so the value is set here.
    """
    config = convnext_config(spec)
    model = ConvNextModel(config)
    # The final norm belongs to the classifier head (timm `head.norm`): never used by the towers and
    # absent from Mini-Gemini checkpoints, so the trunk has none (forward then pools unnormalised).
    model.layernorm = nn.Identity()
    for module in model.modules():
        if isinstance(module, nn.LayerNorm):
            module.eps = config.layer_norm_eps
    return model


def convnext_stride(config: ConvNextConfig) -> int:
    """Total downsampling of the last stage: the stem's patch size, then x2 per later stage."""
    return config.patch_size * 2 ** (config.num_stages - 1)


def convnext_stage_features(model: ConvNextModel, pixel_values: torch.Tensor) -> list[torch.Tensor]:
    """(N, 3, H, W) -> one (N, C_i, H / s_i, W / s_i) map per stage, before any head norm."""
    out = model(pixel_values.to(model.dtype), output_hidden_states=True)
    return list(out.hidden_states[1:])  # hidden_states[0] is the stem output
