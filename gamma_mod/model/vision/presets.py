"""Architectures of the released vision towers, looked up by the weight names official configs carry.

Official LLaVA-HR / Mini-Gemini config.json files name their towers (`mm_vision_tower`,
`vision_tower_slow`, `mm_vision_tower_aux`) instead of describing them; the official code then
downloads the weights by that name. We never go to the hub: a name resolves to a fixed architecture
here (pure data), the weights come from the checkpoint folder. Matching is on the name's last path
component, so a local path such as `model_zoo/OpenAI/clip-vit-large-patch14-336` resolves too; an
unknown name is an error that says how to describe the tower instead (`vision_config` /
`vision_config_hr`).
"""

from __future__ import annotations

from typing import Any

# transformers CLIPVisionConfig fields.
CLIP_PRESETS: dict[str, dict[str, Any]] = {
    # openai/clip-vit-large-patch14-336 (LLaVA-1.5, LLaVA-HR low-resolution branch, Mini-Gemini).
    "clip-vit-large-patch14-336": dict(
        hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
        image_size=336, patch_size=14, projection_dim=768, hidden_act="quick_gelu", layer_norm_eps=1e-5,
    ),
    "clip-vit-large-patch14": dict(
        hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
        image_size=224, patch_size=14, projection_dim=768, hidden_act="quick_gelu", layer_norm_eps=1e-5,
    ),
}

# transformers ConvNextConfig fields. `layer_norm_eps` is applied to every LayerNorm of the trunk
# (see convnext.build_convnext): timm uses 1e-6 except convnext_xxlarge (1e-5).
CONVNEXT_PRESETS: dict[str, dict[str, Any]] = {
    # timm convnext_xxlarge (open_clip convnext_xxlarge, laion2b soup): LLaVA-HR-X.
    "convnext_xxlarge": dict(hidden_sizes=[384, 768, 1536, 3072], depths=[3, 4, 30, 3], layer_norm_eps=1e-5),
    # timm convnext_large / convnext_large_mlp (the `_mlp` is the CLIP head, not part of the trunk);
    # open_clip convnext_large_d_320 has the same trunk. LLaVA-HR-7B/13B, Mini-Gemini.
    "convnext_large": dict(hidden_sizes=[192, 384, 768, 1536], depths=[3, 3, 27, 3], layer_norm_eps=1e-6),
    "convnext_base": dict(hidden_sizes=[128, 256, 512, 1024], depths=[3, 3, 27, 3], layer_norm_eps=1e-6),
}


def _normalise(name: str) -> str:
    return name.rstrip("/").rsplit("/", 1)[-1].lower().replace("-", "_")


def clip_preset(name: str) -> dict[str, Any]:
    key = _normalise(name)
    # Longest pattern first: "..._patch14_336" must not resolve to "..._patch14".
    for pattern in sorted(CLIP_PRESETS, key=len, reverse=True):
        if pattern.replace("-", "_") in key:
            return dict(CLIP_PRESETS[pattern])
    raise ValueError(
        f"unknown CLIP vision tower {name!r} (known: {sorted(CLIP_PRESETS)}); describe it with `vision_config` "
        "(a CLIPVisionConfig dict) in the model config"
    )


def convnext_preset(name: str) -> dict[str, Any]:
    key = _normalise(name)
    # "xxlarge" before "large": both contain "large".
    for pattern in ("convnext_xxlarge", "convnext_large", "convnext_base"):
        if pattern in key:
            return dict(CONVNEXT_PRESETS[pattern])
    raise ValueError(
        f"unknown ConvNeXt tower {name!r} (known families: {sorted(CONVNEXT_PRESETS)}); describe it with "
        "`vision_config_hr` (a ConvNextConfig dict) in the model config"
    )
