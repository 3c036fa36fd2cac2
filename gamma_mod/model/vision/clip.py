"""CLIP vision tower (LLaVA-1.5): features of a chosen hidden layer, CLS token dropped."""

from __future__ import annotations

import torch
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel


class CLIPWeightsHolder(nn.Module):
    """Holds the CLIP model as `.vision_model`, the layout of original CLIP checkpoints and of
    LLaVA's state dicts (transformers 5 flattened `CLIPVisionModel` and dropped that level)."""

    def __init__(self, config: CLIPVisionConfig) -> None:
        super().__init__()
        self.vision_model = CLIPVisionModel(config)


class CLIPVisionTower(nn.Module):
    """LLaVA's CLIP tower; keys `model.vision_tower.vision_tower.vision_model.*` as in LLaVA-1.5."""

    def __init__(self, config: CLIPVisionConfig, select_layer: int = -2, select_feature: str = "patch") -> None:
        super().__init__()
        self.vision_tower = CLIPWeightsHolder(config)
        self.select_layer = select_layer
        self.select_feature = select_feature

    @property
    def hidden_size(self) -> int:
        return self.vision_tower.vision_model.config.hidden_size

    @property
    def num_image_tokens(self) -> int:
        config = self.vision_tower.vision_model.config
        n = (config.image_size // config.patch_size) ** 2
        return n + 1 if self.select_feature == "cls_patch" else n

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, num_patches, C_vision)."""
        clip = self.vision_tower.vision_model
        out = clip(pixel_values.to(clip.dtype), output_hidden_states=True)
        features = out.hidden_states[self.select_layer]
        if self.select_feature == "patch":
            features = features[:, 1:]
        return features
