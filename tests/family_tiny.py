"""Tiny twins of the Hugging Face families, built from each family's own transformers config class, and
model inputs for them (images of several sizes, video) written out by hand: input_ids with the
family's placeholder tokens, pixel tensors, grids. Random init; CPU; a forward takes milliseconds."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import (
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
)

VOCAB = 128
PAD, IMAGE, VIDEO, VISION_START, VISION_END = 0, 100, 101, 102, 103
TEXT = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=512, pad_token_id=PAD, bos_token_id=1, eos_token_id=2)
FAMILIES = ("llava_hf", "llava_onevision", "qwen2_5_vl", "qwen3_vl")
VIDEO_FAMILIES = ("llava_onevision", "qwen2_5_vl", "qwen3_vl")
QWEN_MROPE = dict(rope_type="default", rope_theta=10000.0, mrope_section=[2, 1, 1])


def tiny_config(family: str):
    if family == "llava_hf":
        return LlavaConfig(
            text_config=dict(model_type="llama", **TEXT),
            vision_config=dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=64,
                               num_hidden_layers=2, num_attention_heads=4, image_size=28, patch_size=14),
            image_token_id=IMAGE, pad_token_id=PAD)
    if family == "llava_onevision":
        return LlavaOnevisionConfig(
            text_config=dict(model_type="qwen2", **TEXT),
            vision_config=dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=64,
                               num_hidden_layers=2, num_attention_heads=4, image_size=28, patch_size=14),
            image_token_id=IMAGE, video_token_id=VIDEO, image_grid_pinpoints=[[28, 28], [28, 56], [56, 28]],
            vision_feature_layer=-1)
    if family == "qwen2_5_vl":
        return Qwen2_5_VLConfig(
            text_config=dict(model_type="qwen2_5_vl_text", **TEXT, rope_parameters=QWEN_MROPE),
            vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=4, out_hidden_size=32,
                               patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56,
                               fullatt_block_indexes=[1]),
            image_token_id=IMAGE, video_token_id=VIDEO, vision_start_token_id=VISION_START,
            vision_end_token_id=VISION_END)
    if family == "qwen3_vl":
        return Qwen3VLConfig(
            text_config=dict(model_type="qwen3_vl_text", head_dim=8, **TEXT,
                             rope_parameters=dict(QWEN_MROPE, mrope_interleaved=True)),
            vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=4, out_hidden_size=32,
                               patch_size=16, spatial_merge_size=2, temporal_patch_size=2,
                               num_position_embeddings=16, deepstack_visual_indexes=[0]),
            image_token_id=IMAGE, video_token_id=VIDEO, vision_start_token_id=VISION_START,
            vision_end_token_id=VISION_END)
    raise ValueError(family)


MODEL_CLASSES = {
    "llava_hf": LlavaForConditionalGeneration,
    "llava_onevision": LlavaOnevisionForConditionalGeneration,
    "qwen2_5_vl": Qwen2_5_VLForConditionalGeneration,
    "qwen3_vl": Qwen3VLForConditionalGeneration,
}


def tiny_model(family: str, seed: int = 0):
    torch.manual_seed(seed)
    model = MODEL_CLASSES[family](tiny_config(family)).eval()
    # Bigger random weights than the default 0.02 std, so that routing and attention have visible effects.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2 and "language_model" in name:
                p.normal_(0, 0.2)
    return model


@dataclass
class Sample:
    """One prompt: text token ids around the media placeholder tokens, and the media's tensors."""

    input_ids: list[int]
    vision: dict  # the family's vision fields for this sample alone


def _text(n: int, start: int) -> list[int]:
    return [3 + (start + 7 * i) % 90 for i in range(n)]


def qwen_patch_dim(family: str) -> int:
    patch = 14 if family == "qwen2_5_vl" else 16
    return 3 * 2 * patch * patch


def image_sample(family: str, size: int = 0, seed: int = 0) -> Sample:
    """A prompt with one image; `size` picks one of several image sizes (different token counts)."""
    g = torch.Generator().manual_seed(seed)
    system, question = _text(3, seed), _text(4, seed + 1)
    if family == "llava_hf":
        # llava-hf images are one fixed size: 28 px -> 2 x 2 patches = 4 tokens (CLS dropped)
        return Sample(system + [IMAGE] * 4 + question, {"pixel_values": torch.randn(1, 3, 28, 28, generator=g)})
    if family == "llava_onevision":
        hw = [(28, 28), (28, 56)][size]
        tiles = 1 + (hw[0] // 28) * (hw[1] // 28)  # base image + anyres tiles of the best pinpoint
        pixels = torch.randn(1, tiles, 3, 28, 28, generator=g)
        return Sample(system + [IMAGE] * onevision_image_tokens(hw) + question,
                      {"pixel_values": pixels, "image_sizes": torch.tensor([hw])})
    grid = [(1, 4, 4), (1, 4, 6)][size]
    n_patches = grid[0] * grid[1] * grid[2]
    n_tokens = n_patches // 4  # 2 x 2 spatial merge
    pixels = torch.randn(n_patches, qwen_patch_dim(family), generator=g)
    ids = system + [VISION_START] + [IMAGE] * n_tokens + [VISION_END] + question
    return Sample(ids, {"pixel_values": pixels, "image_grid_thw": torch.tensor([grid])})


def onevision_image_tokens(hw: tuple[int, int]) -> int:
    """LLaVA-OneVision anyres features of a tiny 2 x 2-patch tile: base tile 4 tokens; the tiles'
    (rows x cols) patch grid with one image_newline per row (unpadded: exact fit)."""
    rows, cols = 2 * (hw[0] // 28), 2 * (hw[1] // 28)
    return 4 + rows * (cols + 1)


def video_sample(family: str, frames: int = 2, seed: int = 0) -> Sample:
    g = torch.Generator().manual_seed(seed)
    system, question = _text(3, seed), _text(4, seed + 1)
    if family == "llava_onevision":
        pixels = torch.randn(1, frames, 3, 28, 28, generator=g)
        # each frame: 2 x 2 patches, bilinear-pooled by 2 -> 1 x 1, plus one image_newline per video
        return Sample(system + [VIDEO] * (frames * onevision_video_tokens_per_frame() + 1) + question,
                      {"pixel_values_videos": pixels})
    grid = (frames, 4, 4)
    n_patches = (frames // 2) * 16  # temporal patch 2: two frames make one temporal patch
    per_t = 16 // 4
    pixels = torch.randn(n_patches, qwen_patch_dim(family), generator=g)
    if family == "qwen2_5_vl":
        ids = system + [VISION_START] + [VIDEO] * (grid[0] // 2 * per_t) + [VISION_END] + question
        return Sample(ids, {"pixel_values_videos": pixels, "video_grid_thw": torch.tensor([(grid[0] // 2, 4, 4)])})
    # Qwen3-VL separates temporal patches by timestamps: <t> <vision_start> frame <vision_end> per patch
    ids = list(system)
    for t in range(grid[0] // 2):
        ids += [50 + t, VISION_START] + [VIDEO] * per_t + [VISION_END]
    return Sample(ids + question, {"pixel_values_videos": pixels,
                                   "video_grid_thw": torch.tensor([(grid[0] // 2, 4, 4)])})


def onevision_video_tokens_per_frame() -> int:
    return 1


def batch(family: str, samples: list[Sample], padding_side: str = "left") -> dict:
    """Pad and join samples the way the family's model expects (Qwen: patches concatenated; LLaVA: stacked)."""
    length = max(len(s.input_ids) for s in samples)
    ids, mask = [], []
    for s in samples:
        pad = [PAD] * (length - len(s.input_ids))
        real = [1] * len(s.input_ids)
        ids.append(pad + s.input_ids if padding_side == "left" else s.input_ids + pad)
        mask.append([0] * len(pad) + real if padding_side == "left" else real + [0] * len(pad))
    out = {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask)}
    keys = samples[0].vision.keys()
    for key in keys:
        parts = [s.vision[key] for s in samples]
        if family == "llava_onevision" and key == "pixel_values":
            tiles = max(p.shape[1] for p in parts)  # the processor pads the tile axis
            parts = [torch.cat([p, p.new_zeros(1, tiles - p.shape[1], *p.shape[2:])], dim=1) for p in parts]
        out[key] = torch.cat(parts, dim=0)
    if family in ("qwen2_5_vl", "qwen3_vl"):
        types = torch.zeros_like(out["input_ids"])
        types[out["input_ids"] == IMAGE] = 1
        types[out["input_ids"] == VIDEO] = 2
        out["mm_token_type_ids"] = types
    return out
