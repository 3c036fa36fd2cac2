"""LLaVA-HR's dual-resolution tower: a CLIP ViT (low resolution, "fast") and a ConvNeXt (high
resolution, "slow") fused by the Mixture-of-Resolution Adapter (MR-Adapter).

Data flow for one (N, 3, S, S) image, S = `input_image_size` (1024 in LLaVA-HR):
  1. ConvNeXt runs on the full image: final-stage map (N, C_slow, S/32, S/32).
  2. The image is resized to S_fast = max(S/32 * patch, clip image_size) (448 for CLIP-L/14 at
     S = 1024) and embedded by CLIP with position embeddings resampled to the new grid; the CLS
     token is dropped before `pre_layrnorm`, so the ViT carries only patch tokens.
  3. The ViT layers run in 4 equal groups; after each of the first 3 groups an MR-Adapter injects
     the ConvNeXt map into the ViT tokens (`align_stages_latent.{0,1,2}`).
  4. After the last ViT layer (no post-layernorm; `mm_vision_select_layer` is not used by this
     tower, as in LLaVA-HR) `align_stages.0` adds projections of both branches.
  Output: (N, (S/32)^2, C_fast) -> 1024 tokens of width 1024 at S = 1024.

Module and parameter names follow LLaVA-HR's state dicts (`fast_vision_tower.vision_tower.
vision_model.*`, `slow_vision_tower.vision_tower.*`, `align_stages*.{slow_conv, slow_proj,
fast_conv, fast_proj, gate}`), so only the ConvNeXt trunk needs a key map on load.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPVisionConfig
from transformers import initialization as init

from .clip import CLIPVisionTower
from .convnext import build_convnext, convnext_config, convnext_stride
from .initialization import mark_initialized

N_VIT_GROUPS = 4  # the ViT is cut into 4 groups; an MR-Adapter sits after each of the first 3


def tokens_to_grid(tokens: torch.Tensor) -> torch.Tensor:
    """(N, L, C) with L a square -> (N, C, sqrt(L), sqrt(L))."""
    n, length, c = tokens.shape
    side = math.isqrt(length)
    if side * side != length:
        raise ValueError(f"{length} tokens do not form a square grid")
    return tokens.transpose(1, 2).reshape(n, c, side, side)


def resize_map(feature: torch.Tensor, side: int) -> torch.Tensor:
    """(N, C, h, h) -> (N, C, side, side): bilinear upsampling, average pooling when shrinking
    (the grids are integer multiples of each other in both released models)."""
    h = feature.shape[-1]
    if h == side:
        return feature
    if h < side:
        return F.interpolate(feature.float(), size=(side, side), mode="bilinear", align_corners=True).to(feature.dtype)
    if h % side:
        raise ValueError(f"cannot pool a {h}x{h} map to {side}x{side}")
    return F.avg_pool2d(feature, h // side, h // side)


class MRAdapter(nn.Module):
    """One MR-Adapter step inside the ViT (LLaVA-HR's `align_stages_latent.k`).

    slow: 1x1 conv -> GELU -> 1x1 conv to the ViT width, resized to the ViT grid.
    fast: + 1x1 conv(GELU(depthwise 7x7 conv)) residual on the ViT tokens laid out as a grid.
    A scalar gate per image, tanh(MLP(mean over tokens of [fast, slow])), scales the slow update.
    Both output projections start at zero, so a fresh adapter is the identity on the ViT tokens.
    """

    def __init__(self, fast_dim: int, slow_dim: int) -> None:
        super().__init__()
        self.slow_conv = nn.Conv2d(slow_dim, slow_dim, 1)
        self.slow_proj = nn.Conv2d(slow_dim, fast_dim, 1)
        self.fast_conv = nn.Conv2d(fast_dim, fast_dim, 7, padding=3, groups=fast_dim)
        self.fast_proj = nn.Conv2d(fast_dim, fast_dim, 1)
        self.gate = nn.Sequential(nn.Linear(2 * fast_dim, fast_dim // 2), nn.GELU(), nn.Linear(fast_dim // 2, 1))
        self.init_weights()

    def init_weights(self) -> None:
        # transformers' init functions leave parameters loaded from a checkpoint untouched.
        init.xavier_uniform_(self.slow_conv.weight)
        init.zeros_(self.slow_conv.bias)
        init.xavier_uniform_(self.fast_conv.weight)
        init.zeros_(self.fast_conv.bias)
        for proj in (self.slow_proj, self.fast_proj):
            init.zeros_(proj.weight)
            init.zeros_(proj.bias)
        for linear in (self.gate[0], self.gate[2]):
            init.xavier_uniform_(linear.weight)
            init.zeros_(linear.bias)

    def forward(self, fast: torch.Tensor, slow: torch.Tensor) -> torch.Tensor:
        """fast (N, L, D) ViT tokens, slow (N, C, h, w) ConvNeXt map -> (N, L, D)."""
        grid = tokens_to_grid(fast)  # (N, D, s, s)
        side = grid.shape[-1]
        slow = self.slow_proj(F.gelu(self.slow_conv(slow)))  # (N, D, h, w)
        slow = resize_map(slow, side).flatten(2).transpose(1, 2)  # (N, L, D)
        fast = (grid + self.fast_proj(F.gelu(self.fast_conv(grid)))).flatten(2).transpose(1, 2)
        gate = self.gate(torch.cat([fast, slow], dim=-1).mean(1)).unsqueeze(1)  # (N, 1, 1)
        return fast + slow * gate.tanh()


class MRFusion(nn.Module):
    """The final fusion after the ViT (LLaVA-HR's `align_stages.0`): fast_proj(fast) + slow_proj(slow)."""

    def __init__(self, fast_dim: int, slow_dim: int) -> None:
        super().__init__()
        self.fast_proj = nn.Linear(fast_dim, fast_dim)
        self.slow_proj = nn.Linear(slow_dim, fast_dim)

    def forward(self, fast: torch.Tensor, slow: torch.Tensor) -> torch.Tensor:
        side = math.isqrt(fast.shape[1])
        slow = resize_map(slow, side).flatten(2).transpose(1, 2)  # (N, L, C_slow)
        return self.fast_proj(fast) + self.slow_proj(slow)


class ConvNextHolder(nn.Module):
    """Holds the ConvNeXt as `.vision_tower`, LLaVA-HR's `slow_vision_tower.vision_tower` level."""

    def __init__(self, spec: dict) -> None:
        super().__init__()
        self.vision_tower = build_convnext(spec)


class LlavaHRVisionTower(nn.Module):
    def __init__(self, clip_config: CLIPVisionConfig, convnext_spec: dict, input_image_size: int) -> None:
        super().__init__()
        if clip_config.num_hidden_layers % N_VIT_GROUPS:
            raise ValueError(f"LLaVA-HR needs a ViT depth divisible by {N_VIT_GROUPS}, got {clip_config.num_hidden_layers}")
        self.fast_vision_tower = CLIPVisionTower(clip_config)
        self.slow_vision_tower = ConvNextHolder(convnext_spec)
        fast_dim, slow_dim = clip_config.hidden_size, convnext_spec["hidden_sizes"][-1]
        self.align_stages_latent = nn.ModuleList(MRAdapter(fast_dim, slow_dim) for _ in range(N_VIT_GROUPS - 1))
        self.align_stages = nn.ModuleList([MRFusion(fast_dim, slow_dim)])  # PyTorch's default Linear init
        mark_initialized(self.align_stages_latent, self.align_stages)
        self.input_image_size = input_image_size
        self.fast_image_size = llava_hr_fast_image_size(
            clip_config.patch_size, clip_config.image_size, input_image_size, convnext_spec)

    @property
    def hidden_size(self) -> int:
        return self.fast_vision_tower.hidden_size

    @property
    def num_image_tokens(self) -> int:
        clip = self.fast_vision_tower.vision_tower.vision_model.config
        return (self.fast_image_size // clip.patch_size) ** 2

    def embed_fast(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) -> (N, L, D): resize, patchify, add resampled position embeddings, drop CLS."""
        clip = self.fast_vision_tower.vision_tower.vision_model
        size = self.fast_image_size
        x = F.interpolate(pixel_values.float(), size=(size, size), mode="bilinear", align_corners=True)
        patches = clip.embeddings.patch_embedding(x.to(clip.dtype)).flatten(2).transpose(1, 2)  # (N, L, D)
        pos = clip.embeddings.position_embedding.weight[1:]  # (L0, D) without the CLS position
        side0, side = math.isqrt(pos.shape[0]), math.isqrt(patches.shape[1])
        if side0 != side:
            # Bicubic with antialias (LLaVA-HR's resampling), in fp32.
            grid = pos.float().reshape(1, side0, side0, -1).permute(0, 3, 1, 2)
            grid = F.interpolate(grid, size=(side, side), mode="bicubic", antialias=True, align_corners=False)
            pos = grid.permute(0, 2, 3, 1).reshape(side * side, -1).to(pos.dtype)
        return clip.pre_layrnorm(patches + pos)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) -> (N, (S/32)^2, D)."""
        convnext = self.slow_vision_tower.vision_tower
        slow = convnext(pixel_values.to(convnext.dtype)).last_hidden_state  # (N, C_slow, S/32, S/32)
        fast = self.embed_fast(pixel_values)
        layers = self.fast_vision_tower.vision_tower.vision_model.encoder.layers
        per_group = len(layers) // N_VIT_GROUPS
        for group in range(N_VIT_GROUPS):
            for layer in layers[group * per_group:(group + 1) * per_group]:
                fast = layer(fast, attention_mask=None)
            if group < N_VIT_GROUPS - 1:
                fast = self.align_stages_latent[group](fast, slow.to(fast.dtype))
        return self.align_stages[0](fast, slow.to(fast.dtype))


def llava_hr_fast_image_size(patch_size: int, clip_image_size: int, input_image_size: int,
                             convnext_spec: dict | None = None) -> int:
    """LLaVA-HR feeds the ViT S/32 * patch pixels (one ViT patch per ConvNeXt output cell; 32 is the
    ConvNeXt's total stride), never less than the ViT's native size: 448 for CLIP-L/14 at S = 1024."""
    stride = convnext_stride(convnext_config(convnext_spec)) if convnext_spec else 32
    return max(input_image_size // stride * patch_size, clip_image_size)
