"""CLIP vision tower (LLaVA-1.5): features of a chosen hidden layer, CLS token dropped."""

from __future__ import annotations

import torch
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel


class CLIPVisionTower(nn.Module):
    """Wraps `CLIPVisionModel` as `.vision_tower`, giving LLaVA's key names
    (`model.vision_tower.vision_tower.vision_model.*`)."""

    def __init__(self, config: CLIPVisionConfig, select_layer: int = -2, select_feature: str = "patch") -> None:
        super().__init__()
        self.vision_tower = CLIPVisionModel(config)
        self.select_layer = select_layer
        self.select_feature = select_feature

    @property
    def hidden_size(self) -> int:
        return self.vision_tower.config.hidden_size

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, num_patches, C_vision)."""
        dtype = self.vision_tower.dtype
        out = self.vision_tower(pixel_values.to(dtype), output_hidden_states=True)
        features = out.hidden_states[self.select_layer]
        if self.select_feature == "patch":
            features = features[:, 1:]
        return features
