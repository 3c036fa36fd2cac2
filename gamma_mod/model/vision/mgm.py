"""Mini-Gemini(-HD)'s dual tower: CLIP ViT low-resolution queries, ConvNeXt high-resolution
keys/values, fused by patch info mining.

One (N, 3, S_aux, S_aux) image in (S_aux = `image_size_aux`, 1536 for MGM-HD):
  1. ConvNeXt on the full image; the 4 stage maps are upsampled (bilinear) to the stage-0 grid
     and concatenated: (N, sum(C_i), S_aux/4, S_aux/4) (2880 channels for ConvNeXt-L).
  2. Low-resolution views for CLIP (`image_grid` g, `image_global`): the g x g crops (row-major)
     and, with `image_global`, the whole image, each resized to the CLIP input size (336).
     CLIP gives (select layer -2, CLS dropped) (., L, C) per view, L = 576 for CLIP-L/14-336.
  3. Patch info mining: the high-resolution map is cut the same way (each crop's part; the global
     view gets the whole map downscaled by g) and split into one p x p region per CLIP token. Each
     CLIP token is a query (LayerNorm + Linear) attending to its own region's keys and values
     (LayerNorm + Linear from the ConvNeXt width); the result is added to the token.
  4. Tokens are ordered [global, crop 0, ..., crop g^2-1]: (g^2 + 1) * L = 2880 for MGM-HD.

Deviation from Mini-Gemini: its data pipeline resizes the low-resolution views with PIL; here the
tower derives them from the one high-resolution input (antialiased bilinear), so the model keeps a
single `pixel_values` input.

Names: CLIP under `vision_tower.vision_model` (as MGM's `model.vision_tower.vision_tower.*`), the
projections `vlm_uni_{query,aux,val}_projector.{0,1}` as MGM's; MGM's `model.vision_tower_aux.*`
(open_clip/timm names) maps onto `vision_tower_aux` (transformers ConvNext) on load.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPVisionConfig

from .clip import CLIPVisionTower
from .convnext import build_convnext, convnext_stage_features
from .initialization import mark_initialized


def projection(in_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, out_dim))


class MGMVisionTower(CLIPVisionTower):
    def __init__(self, clip_config: CLIPVisionConfig, convnext_spec: dict, image_size_aux: int,
                 image_grid: int = 1, image_global: bool = False, select_layer: int = -2,
                 select_feature: str = "patch") -> None:
        super().__init__(clip_config, select_layer, select_feature)
        if select_feature != "patch":
            raise ValueError("Mini-Gemini's patch info mining needs mm_vision_select_feature='patch'")
        self.vision_tower_aux = build_convnext(convnext_spec)
        dim, aux_dim = clip_config.hidden_size, sum(convnext_spec["hidden_sizes"])
        self.vlm_uni_query_projector = projection(dim, dim)
        self.vlm_uni_aux_projector = projection(aux_dim, dim)
        self.vlm_uni_val_projector = projection(aux_dim, dim)
        # PyTorch's default init, as Mini-Gemini.
        mark_initialized(self.vlm_uni_query_projector, self.vlm_uni_aux_projector, self.vlm_uni_val_projector)
        self.image_size_aux = image_size_aux
        self.image_grid = image_grid
        self.image_global = image_global
        side = clip_config.image_size // clip_config.patch_size
        # Every CLIP token must own a whole p x p region of the stage-0 map (stride 4).
        aux_side = image_size_aux // convnext_spec.get("patch_size", 4) // image_grid
        if aux_side % side:
            raise ValueError(f"image_size_aux {image_size_aux} / grid {image_grid} gives a {aux_side}-wide high-res "
                             f"map per view, not a multiple of the {side}-token CLIP grid")

    @property
    def num_image_tokens(self) -> int:
        clip = self.vision_tower.vision_model.config
        return (clip.image_size // clip.patch_size) ** 2 * (self.image_grid ** 2 + int(self.image_global))

    def aux_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) -> (N, sum(C_i), S/4, S/4): every stage, upsampled to the stage-0 grid."""
        stages = convnext_stage_features(self.vision_tower_aux, pixel_values)
        size = stages[0].shape[-2:]
        resized = [stages[0]] + [
            F.interpolate(s.float(), size=size, mode="bilinear", align_corners=False).to(s.dtype) for s in stages[1:]
        ]
        return torch.cat(resized, dim=1)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(N, 3, S_aux, S_aux) -> (N, (g^2 + global) * L, C)."""
        n = pixel_values.shape[0]
        g = self.image_grid
        size = self.vision_tower.vision_model.config.image_size
        aux = self.aux_features(pixel_values)  # (N, C_aux, H, W)

        def resize(x: torch.Tensor) -> torch.Tensor:
            return F.interpolate(x.float(), size=(size, size), mode="bilinear", antialias=True,
                                 align_corners=False).to(pixel_values.dtype)

        views, aux_views = [], []  # each (N, ...) per view, in output order
        if self.image_global:
            views.append(resize(pixel_values))
            aux_views.append(aux if g == 1 else F.interpolate(
                aux.float(), scale_factor=1 / g, mode="bilinear", align_corners=False).to(aux.dtype))
        if g > 1 or not self.image_global:
            h, w = pixel_values.shape[-2:]
            ah, aw = aux.shape[-2:]
            for i in range(g):
                for j in range(g):
                    views.append(resize(pixel_values[..., i * h // g:(i + 1) * h // g, j * w // g:(j + 1) * w // g]))
                    aux_views.append(aux[..., i * ah // g:(i + 1) * ah // g, j * aw // g:(j + 1) * aw // g])
        v = len(views)
        queries = super().forward(torch.cat(views, dim=0))  # (V * N, L, C), view-major
        mined = self.mine(queries, torch.cat(aux_views, dim=0))  # (V * N, L, C)
        tokens = queries + mined
        return tokens.reshape(v, n, *tokens.shape[1:]).transpose(0, 1).flatten(1, 2)  # (N, V * L, C)

    def mine(self, queries: torch.Tensor, aux: torch.Tensor) -> torch.Tensor:
        """Patch info mining. queries (M, L, C) on an s x s grid, aux (M, C_aux, s*p, s*p) ->
        (M, L, C): each query attends to the p*p high-resolution cells under it."""
        m, length, dim = queries.shape
        side = int(length ** 0.5)
        p = aux.shape[-1] // side
        regions = aux.permute(0, 2, 3, 1).reshape(m, side, p, side, p, -1)
        regions = regions.permute(0, 1, 3, 2, 4, 5).reshape(m, length, p * p, -1)  # (M, L, p*p, C_aux)
        q = self.vlm_uni_query_projector(queries).unsqueeze(2)  # (M, L, 1, C)
        k = self.vlm_uni_aux_projector(regions)  # (M, L, p*p, C)
        v = self.vlm_uni_val_projector(regions)  # (M, L, p*p, C)
        att = (q @ k.transpose(-1, -2) / dim ** 0.5).nan_to_num()  # (M, L, 1, p*p)
        return (att.softmax(-1) @ v).squeeze(2)
