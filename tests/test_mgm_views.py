"""Mini-Gemini-HD's low-resolution views and tower output against the official pipeline.

The references below are written out here from dvlab-research/MGM's rules (never imported):
views as `mgm/eval/model_vqa.py` / `mgm/train/train.py` make them (shrink the high-resolution
image to grid x 336 px with plain bilinear, cut the crops from that, shrink it again for the
global view; layout [crops, global]); features as `mgm/model/mgm_arch.py` `encode_images` /
`unified_resampler` compute them from those views (`images`) and the high-resolution image
(`images_aux`).
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from test_checkpoint_loading import official_config, official_state_dict, source_model, write_sharded

from gamma_mod.model.builder import build_config
from gamma_mod.model.checkpoints import load_official_checkpoint
from gamma_mod.model.llava_llama import LlavaLlamaForCausalLM
from gamma_mod.model.vision import ImageProcessor
from gamma_mod.model.vision.mgm import MGMVisionTower

TOKENS = dict(vocab_size=64, image_token_index=5, pad_token_id=0, bos_token_id=1, eos_token_id=2)
# A tiny MGM-HD whose 160 px input is not a multiple of the 2 x 24 px grid: the first shrink is a
# non-integer resampling (160 -> 48), as 1536 -> 672 in MGM-HD. 4 x 4 CLIP tokens per view; the
# 40 x 40 stage-0 map gives each view a 20 x 20 map, 5 x 5 cells per token.
SPEC = {
    "text": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                 num_key_value_heads=2, max_position_embeddings=256),
    "vision": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                   image_size=24, patch_size=6),
    "tower": dict(vision_tower_type="mgm", image_size_aux=160, image_grid=2, image_global=True,
                  vision_config_hr=dict(hidden_sizes=[8, 16, 16, 32], depths=[1, 1, 1, 1], layer_norm_eps=1e-6)),
    "projector": dict(mm_projector_type="mlp2x_gelu", mm_vision_select_layer=-2),
}
GRID, VIEW = 2, 24


def tiny_model() -> LlavaLlamaForCausalLM:
    torch.manual_seed(0)
    return LlavaLlamaForCausalLM(build_config(SPEC, **TOKENS)).eval()


# -- the official pipeline, by hand --------------------------------------------------------------------
def official_views(image_aux: torch.Tensor, size: int, grid: int) -> torch.Tensor:
    """One normalised (3, S, S) image -> (grid^2 + 1, 3, size, size), as model_vqa.py / train.py."""
    image = F.interpolate(image_aux[None], size=[size * grid, size * grid], mode="bilinear", align_corners=False)[0]
    crops = [image[:, i * size:(i + 1) * size, j * size:(j + 1) * size] for i in range(grid) for j in range(grid)]
    whole = F.interpolate(image[None], size=[size, size], mode="bilinear", align_corners=False)[0]
    return torch.stack(crops + [whole])  # [image_crops, image_global]


def official_resampler(tower, images: torch.Tensor, images_aux: torch.Tensor):
    """mgm_arch.unified_resampler: (M, L, C) CLIP tokens, (M, C_aux, H, W) map -> (tokens, mined)."""
    patch_num = int(images.shape[1] ** 0.5)
    patch_size = images_aux.shape[-1] // patch_num
    aux = images_aux.permute(0, 2, 3, 1)
    aux = aux.reshape(len(aux), patch_num, patch_size, patch_num, patch_size, aux.shape[-1])
    aux = aux.permute(0, 1, 3, 2, 4, 5).reshape(len(aux), patch_num ** 2, patch_size ** 2, aux.shape[-1])
    query = tower.vlm_uni_query_projector(images)
    key = tower.vlm_uni_aux_projector(aux)
    value = tower.vlm_uni_val_projector(aux)
    att = (query[:, :, None] @ (key.transpose(-1, -2) / key.shape[-1] ** 0.5)).nan_to_num()
    return images, (att.softmax(-1) @ value).mean(2)


def official_encode_images(tower, projector, images: torch.Tensor, images_aux: torch.Tensor, grid: int):
    """mgm_arch.encode_images with image_grid > 1 and image_global: images (B, grid^2 + 1, 3, s, s)
    [crops, global], images_aux (B, 3, S, S) -> (B, (grid^2 + 1) * L, hidden)."""
    batch = images.shape[0]
    global_images = images[:, -1:].flatten(0, 1)
    grid_images = images[:, :-1].flatten(0, 1)
    clip = tower.vision_tower.vision_model
    features = clip(torch.cat([grid_images, global_images]), output_hidden_states=True).hidden_states[-2][:, 1:]
    feat_global, features = features[-len(global_images):], features[:len(grid_images)]
    # openclip_encoder.backbone: every ConvNeXt stage upsampled to the stage-0 grid, concatenated.
    stages = tower.vision_tower_aux(images_aux, output_hidden_states=True).hidden_states[1:]
    aux = torch.cat([stages[0]] + [F.interpolate(s, size=stages[0].shape[-2:], mode="bilinear", align_corners=False)
                                   for s in stages[1:]], dim=1)
    aux_global = F.interpolate(aux, scale_factor=1 / grid, mode="bilinear", align_corners=False)
    feat_global, aux_feat_global = official_resampler(tower, feat_global, aux_global)
    c, h, w = aux.shape[1:]
    aux = aux.reshape(batch, c, grid, h // grid, grid, w // grid).permute(0, 2, 4, 1, 3, 5).flatten(1, 2).flatten(0, 1)
    features, aux_features = official_resampler(tower, features, aux)
    features = features.reshape(batch, grid ** 2, *features.shape[1:]).flatten(1, 2)
    aux_features = aux_features.reshape(batch, grid ** 2, *aux_features.shape[1:]).flatten(1, 2)
    features = torch.cat([feat_global, features], dim=1)  # [global, local]
    aux_features = torch.cat([aux_feat_global, aux_features], dim=1)
    return projector(features + aux_features)


# -- views -----------------------------------------------------------------------------------------
def test_views_of_a_hand_made_image_follow_the_rule():
    """At an exact factor of 2, plain bilinear (align_corners=False) is the mean of each 2 x 2 block, so
    the expected views of an integer image are exact: 96 px -> 2 x 24 px = 48 px by 2 x 2 means, crops cut
    from that, global = 2 x 2 means of the 48 px image. Antialiased bilinear (the old tower) is not."""
    image = ((torch.arange(96).view(96, 1) * 7 + torch.arange(96).view(1, 96) * 13) % 23).float()
    pixels = torch.stack([image, image.T, 22 - image]).unsqueeze(0)  # (1, 3, 96, 96), integers 0..22

    def halve(x):  # (3, 2h, 2w) -> (3, h, w): 2 x 2 block means
        return x.reshape(3, x.shape[1] // 2, 2, x.shape[2] // 2, 2).mean(dim=(2, 4))

    shrunk = halve(pixels[0])  # (3, 48, 48)
    expected = torch.stack([shrunk[:, :24, :24], shrunk[:, :24, 24:], shrunk[:, 24:, :24], shrunk[:, 24:, 24:],
                            halve(shrunk)])
    views = tiny_model().model.vision_tower.low_res_views(pixels)
    assert views.shape == (1, 5, 3, 24, 24) and views.dtype == torch.float32
    assert torch.equal(views[0], expected)
    antialiased = F.interpolate(pixels, size=(48, 48), mode="bilinear", antialias=True, align_corners=False)
    assert not torch.allclose(antialiased[0], shrunk, atol=1e-2)


def test_views_equal_the_official_pipelines_at_a_non_integer_ratio():
    pixels = torch.randn(2, 3, 160, 160, generator=torch.Generator().manual_seed(0))
    views = tiny_model().model.vision_tower.low_res_views(pixels)
    for b in range(2):
        assert torch.equal(views[b], official_views(pixels[b], VIEW, GRID))


# -- done when: the whole tower + projector on one high-resolution image -----------------------------
def test_tower_and_projector_equal_the_official_pipeline_on_a_high_resolution_image():
    model = tiny_model()
    tower, projector = model.model.vision_tower, model.model.mm_projector
    with torch.no_grad():  # non-trivial values in every part, outputs of order 1
        for p in tower.parameters():
            p.add_(0.05 * torch.randn_like(p))
        for p in projector.parameters():
            p.normal_(0, 0.3)
    pixels = torch.randn(2, 3, 160, 160, generator=torch.Generator().manual_seed(1))  # random noise
    with torch.no_grad():
        ours = model.model.encode_images(pixels)  # (2, 80, 32)
        images = torch.stack([official_views(p, VIEW, GRID) for p in pixels])
        official = official_encode_images(tower, projector, images, pixels, GRID)
        # The old views (each crop of the full image and the full image, antialiased) are far off.
        old = torch.stack([torch.stack([
            F.interpolate(p[None, :, i * 80:(i + 1) * 80, j * 80:(j + 1) * 80], size=(24, 24), mode="bilinear",
                          antialias=True, align_corners=False)[0] for i in range(2) for j in range(2)]
            + [F.interpolate(p[None], size=(24, 24), mode="bilinear", antialias=True, align_corners=False)[0]])
            for p in pixels])
        old_out = projector(tower(pixels, views=old))
    assert ours.shape == official.shape == (2, 80, 32)
    assert (ours - official).abs().max() < 1e-4
    assert official.std() > 1 and (old_out - official).abs().max() > 1


# -- pre-made views on an official-layout checkpoint ----------------------------------------------------
def test_official_layout_checkpoint_gives_the_official_output_for_pre_made_views(tmp_path):
    source = source_model(SPEC, mod=False)
    with torch.no_grad():
        for p in source.model.mm_projector.parameters():
            p.normal_(0, 0.3)
    folder = tmp_path / "mgm-hd-tiny"
    write_sharded(folder, official_state_dict(source), official_config(source))
    loaded = load_official_checkpoint(folder, image_token_index=5)
    g = torch.Generator().manual_seed(2)
    # Views not derived from the image: only the consumption of pre-made views is under test.
    views, pixels = torch.randn(2, 5, 3, 24, 24, generator=g), torch.randn(2, 3, 160, 160, generator=g)
    with torch.no_grad():
        ours = loaded.model.mm_projector(loaded.model.vision_tower(pixels, views=views))
        official = official_encode_images(source.model.vision_tower, source.model.mm_projector, views, pixels, GRID)
    assert (ours - official).abs().max() < 1e-5


def test_bad_view_count_and_global_without_grid_are_errors():
    tower = tiny_model().model.vision_tower
    with pytest.raises(ValueError, match="4 views per image, the tower takes 5"):
        tower(torch.randn(1, 3, 160, 160), views=torch.randn(1, 4, 3, 24, 24))
    with pytest.raises(ValueError, match=r"pixel_values are \(96, 96\) px, the tower takes 160 x 160"):
        tower(torch.randn(1, 3, 96, 96))
    clip = tower.vision_tower.vision_model.config
    with pytest.raises(ValueError, match="image_global needs image_grid >= 2"):
        MGMVisionTower(clip, SPEC["tower"]["vision_config_hr"], 80, image_grid=1, image_global=True)
    with pytest.raises(ValueError, match="not a multiple of the 4-token CLIP grid"):
        MGMVisionTower(clip, SPEC["tower"]["vision_config_hr"], 80, image_grid=2, image_global=True)


# -- the high-resolution image itself --------------------------------------------------------------------
def test_processor_without_pad_resizes_the_shortest_edge_and_centre_crops():
    """CLIPImageProcessor (LLaVA's / Mini-Gemini's process_images for any aspect mode but "pad"): shortest
    edge to S with PIL bicubic, long edge int(S * long / short), then the centre S x S."""
    rng = np.random.default_rng(0)
    for width, height in ((45, 20), (20, 45)):
        image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        processor = ImageProcessor(16, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3), aspect_ratio="square")
        long = int(16 * 45 / 20)  # 36
        resized = np.asarray(image.resize((long, 16) if width > height else (16, long), Image.Resampling.BICUBIC))
        offset = (long - 16) // 2  # 10
        crop = resized[:, offset:offset + 16] if width > height else resized[offset:offset + 16]
        expected = (torch.from_numpy(crop.copy()).permute(2, 0, 1).float() / 255 - torch.tensor([0.5, 0.4, 0.3])
                    .view(3, 1, 1)) / torch.tensor([0.2, 0.25, 0.3]).view(3, 1, 1)
        assert torch.equal(processor(image), expected)
