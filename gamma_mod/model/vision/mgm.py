"""Mini-Gemini(-HD)'s dual tower: CLIP ViT low-resolution queries, ConvNeXt high-resolution
keys/values, fused by patch info mining.

Reproduces dvlab-research/MGM: the view construction of `mgm/eval/model_vqa.py` /
`model_vqa_loader.py` / `mgm/train/train.py` (`LazySupervisedDataset._sample_item`), and
`MGMMetaForCausalLM.encode_images` / `unified_resampler` of `mgm/model/mgm_arch.py` with the
aux backbone of `mgm/model/multimodal_encoder/openclip_encoder.py`.

One (N, 3, S, S) high-resolution image in (S = `image_size_aux`, 1536 for MGM-HD; s = CLIP's
input size, 336; g = `image_grid`):
  1. Low-resolution views (`low_res_views`), as the official data pipeline makes them: shrink the
     image to (g * s) px with plain bilinear interpolation (align_corners=False, no antialias), cut
     the g x g crops of s px from that (row-major), and with `image_global` shrink the (g * s) image
     once more, the same way, to s px for the global view. Layout (N, V, 3, s, s), crops then global
     (the official `images` tensor); V = g^2 + global.
  2. ConvNeXt on the full S px image; the 4 stage maps are upsampled (bilinear) to the stage-0
     grid and concatenated: (N, sum(C_i), S/4, S/4) (2880 channels for ConvNeXt-L).
  3. CLIP on every view (select layer -2, CLS dropped): (., L, C), L = 576 for CLIP-L/14-336.
  4. Patch info mining: the high-resolution map is cut the same way (each crop's part; the global
     view gets the whole map downscaled by g, bilinear) and split into one p x p region per CLIP
     token. Each CLIP token is a query (LayerNorm + Linear) attending to its own region's keys and
     values (LayerNorm + Linear from the ConvNeXt width); the result is added to the token.
  5. Tokens are ordered [global, crop 0, ..., crop g^2-1]: (g^2 + 1) * L = 2880 for MGM-HD.

Deliberate deviations from Mini-Gemini:
  - Where the views are made: the official data pipeline makes them on the CPU in fp32 and passes
    two tensors (`images`, `images_aux`); here the tower makes them from its one `pixel_values`
    input (pre-made views in the official layout may be passed as `views`). Same operations, so the
    same values for fp32 pixels; when pixels arrive in half precision (our eval casts them to the
    model dtype) the shrink starts from rounded pixels, whereas the official code rounds the views
    after shrinking: a difference within the half-precision rounding of the pixels.
  - `image_grid` 1 with `image_global` is rejected: the official `encode_images` fails on it (the
    data pipeline adds no global view for a grid of 1).

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


def low_res_views(pixel_values: torch.Tensor, view_size: int, grid: int, image_global: bool) -> torch.Tensor:
    """(N, 3, H, W) high-resolution pixels -> (N, g^2 + global, 3, s, s) CLIP views, official layout
    [crop 0, ..., crop g^2-1 (row-major), global], in fp32 (see the module docstring, step 1)."""
    n, c = pixel_values.shape[:2]
    g, s = grid, view_size
    # Plain bilinear, no antialias: a plain `torch.nn.functional.interpolate` call, as Mini-Gemini's.
    shrunk = F.interpolate(pixel_values.float(), size=(g * s, g * s), mode="bilinear", align_corners=False)
    crops = shrunk.reshape(n, c, g, s, g, s).permute(0, 2, 4, 1, 3, 5).reshape(n, g * g, c, s, s)
    if not image_global:
        return crops
    whole = F.interpolate(shrunk, size=(s, s), mode="bilinear", align_corners=False)  # from the shrunk image
    return torch.cat([crops, whole.unsqueeze(1)], dim=1)


class MGMVisionTower(CLIPVisionTower):
    def __init__(self, clip_config: CLIPVisionConfig, convnext_spec: dict, image_size_aux: int,
                 image_grid: int = 1, image_global: bool = False, select_layer: int = -2,
                 select_feature: str = "patch") -> None:
        super().__init__(clip_config, select_layer, select_feature)
        if select_feature != "patch":
            raise ValueError("Mini-Gemini's patch info mining needs mm_vision_select_feature='patch'")
        if image_grid < 1:
            raise ValueError(f"image_grid must be >= 1, got {image_grid}")
        if image_global and image_grid == 1:
            raise ValueError("image_global needs image_grid >= 2 (Mini-Gemini adds the global view to a grid of "
                             "crops only; its encode_images fails on a grid of 1 with image_global)")
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
        # The stage-0 map (stride 4) must split into g x g equal crops, and every CLIP token must own a
        # whole p x p region of a crop.
        aux_map = image_size_aux // convnext_spec.get("patch_size", 4)
        if aux_map % image_grid or (aux_map // image_grid) % side:
            raise ValueError(f"image_size_aux {image_size_aux} / grid {image_grid} gives a "
                             f"{aux_map / image_grid:g}-wide high-res map per view, not a multiple of the "
                             f"{side}-token CLIP grid")

    @property
    def num_image_tokens(self) -> int:
        clip = self.vision_tower.vision_model.config
        return (clip.image_size // clip.patch_size) ** 2 * (self.image_grid ** 2 + int(self.image_global))

    def low_res_views(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) -> (N, V, 3, s, s): the CLIP views, crops then global (official layout)."""
        size = self.vision_tower.vision_model.config.image_size
        return low_res_views(pixel_values, size, self.image_grid, self.image_global)

    def aux_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) -> (N, sum(C_i), S/4, S/4): every stage, upsampled to the stage-0 grid."""
        stages = convnext_stage_features(self.vision_tower_aux, pixel_values)
        size = stages[0].shape[-2:]
        resized = [stages[0]] + [
            F.interpolate(s.float(), size=size, mode="bilinear", align_corners=False).to(s.dtype) for s in stages[1:]
        ]
        return torch.cat(resized, dim=1)

    def forward(self, pixel_values: torch.Tensor, views: torch.Tensor | None = None) -> torch.Tensor:
        """(N, 3, S, S) high-resolution pixels -> (N, (g^2 + global) * L, C).

        `views`: pre-made CLIP views (N, g^2 + global, 3, s, s) in the official layout (crops, then
        global: Mini-Gemini's `images`); made from `pixel_values` by `low_res_views` when None.
        """
        if pixel_values.shape[-2:] != (self.image_size_aux, self.image_size_aux):
            raise ValueError(f"pixel_values are {tuple(pixel_values.shape[-2:])} px, the tower takes "
                             f"{self.image_size_aux} x {self.image_size_aux} (image_size_aux)")
        if views is None:
            views = self.low_res_views(pixel_values)
        n, v = views.shape[:2]
        g = self.image_grid
        if v != g * g + int(self.image_global):
            raise ValueError(f"got {v} views per image, the tower takes {g * g + int(self.image_global)} "
                             f"(grid {g}, global {self.image_global})")
        aux = self.aux_features(pixel_values)  # (N, C_aux, H, W)
        c_aux, h, w = aux.shape[1:]
        aux_views = aux.reshape(n, c_aux, g, h // g, g, w // g).permute(0, 2, 4, 1, 3, 5)
        aux_views = aux_views.reshape(n, g * g, c_aux, h // g, w // g)  # (N, g^2, C_aux, h, w), row-major crops
        if self.image_global:
            whole = F.interpolate(aux.float(), scale_factor=1 / g, mode="bilinear", align_corners=False).to(aux.dtype)
            aux_views = torch.cat([aux_views, whole.unsqueeze(1)], dim=1)  # (N, V, C_aux, h, w)
        queries = super().forward(views.flatten(0, 1))  # (N * V, L, C), image-major
        tokens = queries + self.mine(queries, aux_views.flatten(0, 1))
        tokens = tokens.reshape(n, v, *tokens.shape[1:])  # (N, V, L, C)
        if self.image_global:  # Mini-Gemini puts the global view's tokens first
            tokens = torch.cat([tokens[:, -1:], tokens[:, :-1]], dim=1)
        return tokens.flatten(1, 2)

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
