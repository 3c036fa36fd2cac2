import copy

import torch
from PIL import Image

from gamma_mod.eval.skipmap import compute_skip_map, draw_skip_map
from gamma_mod.mod.convert import convert_to_mod

from conftest import IMAGE_TOKEN, NUM_IMAGE_TOKENS


def test_skip_map_png_has_expected_size_and_content(tiny_model, tmp_path):
    mod = convert_to_mod(copy.deepcopy(tiny_model), [1, 2, 3], skip_ratio=0.5)
    ids = torch.tensor([[1, 11, 12] + [IMAGE_TOKEN] * NUM_IMAGE_TOKENS + [20, 21, 22]])
    pixels = torch.randn(1, 3, 32, 32)
    skip_map = compute_skip_map(mod, ids, pixels)
    assert skip_map.layers == [1, 2, 3]
    # 3 system tokens + bos + 16 image tokens routable; 10 skipped per layer, some of them image patches
    for grid, frac in zip(skip_map.grids, skip_map.skip_fraction):
        assert grid.shape == (4, 4)
        assert frac == float(grid.float().mean())
    assert sum(int(g.sum()) for g in skip_map.grids) > 0
    image = Image.new("RGB", (40, 40), (200, 30, 30))
    path = tmp_path / "skip.png"
    draw_skip_map(image, skip_map, str(path), tile=64)
    drawn = Image.open(path)
    assert drawn.size == (3 * 64, 64 + 18)
    colours = drawn.convert("RGB").getcolors(maxcolors=1 << 16)
    assert len(colours) > 3, "a blank picture"
    # A skipped patch is grey, a kept one keeps the image's red.
    tile = drawn.crop((0, 18, 64, 82)).convert("RGB")
    grid = skip_map.grids[0]
    cell = 64 // 4
    for r in range(4):
        for c in range(4):
            red, green, _ = tile.getpixel((c * cell + cell // 2, r * cell + cell // 2))
            assert (abs(red - green) < 10) == bool(grid[r, c])


def test_skipmap_question_always_holds_the_image():
    from gamma_mod.eval.skipmap import skipmap_question

    # The README's example passes a bare question: the image goes first, as model_vqa lays it out.
    assert skipmap_question("What is this?") == "<image>\nWhat is this?"
    assert skipmap_question("Look: <image> what is it?") == "Look: <image> what is it?"
