"""The base models (LLaVA-1.5, LLaVA-HR, Mini-Gemini-HD) on their tiny twins, and the real sizes on meta."""

import math

import pytest
import torch
from transformers import AutoModelForCausalLM

import gamma_mod  # noqa: F401  (registers the Auto classes)
from gamma_mod.mod.convert import convert_to_mod
from gamma_mod.families.specs import is_family_spec
from gamma_mod.model.builder import CONFIG_DIR, build_config
from gamma_mod.model.llava_llama import LlavaLlamaForCausalLM
from gamma_mod.model.vision.llava_hr import LlavaHRVisionTower, MRAdapter
from gamma_mod.model.vision.mgm import MGMVisionTower

IMAGE_TOKEN = 5
TOKENS = dict(vocab_size=64, image_token_index=IMAGE_TOKEN, pad_token_id=0, bos_token_id=1, eos_token_id=2)
TINY = ["llava_v1_5_tiny", "llava_hr_tiny", "mgm_hd_tiny"]


def tiny_model(name: str) -> LlavaLlamaForCausalLM:
    torch.manual_seed(0)
    return LlavaLlamaForCausalLM(build_config(name, **TOKENS)).eval()


def batch(config, n=2, seed=0, padding_side="left"):
    """[bos, sys x3, image x T, question] rows of different lengths, padded; pixels at the tower's input size."""
    g = torch.Generator().manual_seed(seed)
    t = config.num_image_tokens
    rows = [[1] + torch.randint(10, 64, (3,), generator=g).tolist() + [IMAGE_TOKEN] * t
            + torch.randint(10, 64, (q,), generator=g).tolist() for q in (4, 6)[:n]]
    width = max(map(len, rows))
    ids = torch.zeros(n, width, dtype=torch.long)
    mask = torch.zeros(n, width, dtype=torch.long)
    for b, r in enumerate(rows):
        sl = slice(width - len(r), width) if padding_side == "left" else slice(0, len(r))
        ids[b, sl] = torch.tensor(r)
        mask[b, sl] = 1
    size = config.image_input_size
    return ids, mask, torch.randn(n, 3, size, size, generator=g)


@pytest.mark.parametrize("name,kind,tokens,size", [
    ("llava_v1_5_tiny", "clip", 16, 32), ("llava_hr_tiny", "llava_hr", 16, 128), ("mgm_hd_tiny", "mgm", 80, 64),
])
def test_tiny_twin_shapes_and_token_count(name, kind, tokens, size):
    model = tiny_model(name)
    config = model.config
    assert config.vision_tower_type == kind
    assert config.num_image_tokens == model.model.vision_tower.num_image_tokens == tokens
    assert config.image_input_size == size
    features = model.model.encode_images(torch.randn(3, 3, size, size))
    assert features.shape == (3, tokens, config.hidden_size)


@pytest.mark.parametrize("name", TINY)
def test_forward_backward_reaches_both_branches(name):
    model = tiny_model(name).train()
    ids, mask, pixels = batch(model.config, padding_side="right")
    labels = ids.masked_fill(ids == IMAGE_TOKEN, -100).masked_fill(mask == 0, -100)
    out = model(input_ids=ids, attention_mask=mask, pixel_values=pixels, labels=labels)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    tower = model.model.vision_tower
    grads = {"projector": model.model.mm_projector[0].weight, "decoder": model.model.layers[0].self_attn.q_proj.weight}
    if isinstance(tower, LlavaHRVisionTower):
        grads["clip"] = tower.fast_vision_tower.vision_tower.vision_model.embeddings.patch_embedding.weight
        grads["convnext"] = tower.slow_vision_tower.vision_tower.embeddings.patch_embeddings.weight
        grads["fusion"] = tower.align_stages[0].slow_proj.weight
        grads["adapter"] = tower.align_stages_latent[0].slow_proj.weight  # zero-init, but its gradient is not
    elif isinstance(tower, MGMVisionTower):
        grads["clip"] = tower.vision_tower.vision_model.embeddings.patch_embedding.weight
        grads["convnext"] = tower.vision_tower_aux.embeddings.patch_embeddings.weight
        grads["mining"] = tower.vlm_uni_aux_projector[1].weight
    else:
        grads["clip"] = tower.vision_tower.vision_model.embeddings.patch_embedding.weight
    for part, weight in grads.items():
        assert weight.grad is not None and weight.grad.abs().sum() > 0, part


@pytest.mark.parametrize("name", TINY)
def test_generate_cache_equals_no_cache_and_batched_prefill_equals_single(name):
    model = tiny_model(name)
    ids, mask, pixels = batch(model.config)
    kwargs = dict(input_ids=ids, attention_mask=mask, pixel_values=pixels, max_new_tokens=4, do_sample=False)
    with_cache = model.generate(**kwargs)
    assert torch.equal(with_cache, model.generate(**kwargs, use_cache=False))
    # Batched (left-padded) prefill gives each row what it gets alone (logits: greedy tokens of a random
    # tiny model can flip on near-ties).
    with torch.no_grad():
        batched = model(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits[:, -1]
        for b in range(2):
            real = mask[b].bool()
            single = model(input_ids=ids[b:b + 1, real], pixel_values=pixels[b:b + 1]).logits[0, -1]
            assert torch.allclose(single, batched[b], atol=1e-4)


@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("mod", [False, True])
def test_save_load_round_trip_and_mod_conversion(name, mod, tmp_path):
    model = tiny_model(name)
    ids, mask, pixels = batch(model.config)
    if mod:
        with torch.no_grad():
            dense = model(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits
        convert_to_mod(model, [1, 2], routing_ratio=0.5)
        assert model.model.mod_layer_indices == [1, 2]
        with torch.no_grad():
            out = model(input_ids=ids, attention_mask=mask, pixel_values=pixels)
        assert model.last_routing_stats and not torch.allclose(out.logits, dense)  # tokens were skipped
        model.train()
        labels = ids.masked_fill(ids == IMAGE_TOKEN, -100).masked_fill(mask == 0, -100)
        train_out = model(input_ids=ids, attention_mask=mask, pixel_values=pixels, labels=labels)
        assert train_out.routing_loss is not None
        train_out.loss.backward()
        assert model.model.layers[1].router.weight.grad.abs().sum() > 0
        model.eval()
        generated = model.generate(input_ids=ids, attention_mask=mask, pixel_values=pixels, max_new_tokens=3,
                                   do_sample=False)
        assert generated.shape == (2, ids.shape[1] + 3)
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(loaded.model.vision_tower) is type(model.model.vision_tower)
    with torch.no_grad():
        a = model(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits
        b = loaded(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits
    assert torch.equal(a, b)


def test_fresh_mr_adapter_is_identity_and_gate_scales_the_slow_branch():
    torch.manual_seed(0)
    adapter = MRAdapter(fast_dim=8, slow_dim=12)
    fast, slow = torch.randn(2, 16, 8), torch.randn(2, 12, 2, 2)
    assert torch.equal(adapter(fast, slow), fast)  # zero-initialised output projections (LLaVA-HR)
    with torch.no_grad():
        adapter.slow_proj.weight.normal_()
        adapter.gate[2].bias.fill_(100.0)  # tanh(gate) == 1
        adapter.gate[2].weight.zero_()
    # By hand: slow update = slow_proj(gelu(slow_conv(slow))), bilinearly upsampled 2x2 -> 4x4 (align_corners).
    s = adapter.slow_proj(torch.nn.functional.gelu(adapter.slow_conv(slow)))
    s = torch.nn.functional.interpolate(s, size=(4, 4), mode="bilinear", align_corners=True)
    expected = fast + s.flatten(2).transpose(1, 2)
    assert torch.allclose(adapter(fast, slow), expected, atol=1e-6)


def test_patch_info_mining_matches_a_per_token_loop():
    model = tiny_model("mgm_hd_tiny")
    tower = model.model.vision_tower
    torch.manual_seed(1)
    queries = torch.randn(3, 16, 32)  # 4x4 CLIP grid
    aux = torch.randn(3, 72, 8, 8)  # 2x2 high-res cells per token
    got = tower.mine(queries, aux)
    for m in range(3):
        for t in range(16):
            r, c = divmod(t, 4)
            cells = aux[m, :, 2 * r:2 * r + 2, 2 * c:2 * c + 2].reshape(72, 4).T  # (4, C_aux)
            q = tower.vlm_uni_query_projector(queries[m, t])
            k = tower.vlm_uni_aux_projector(cells)
            v = tower.vlm_uni_val_projector(cells)
            w = torch.softmax(k @ q / math.sqrt(32), dim=0)
            assert torch.allclose(got[m, t], w @ v, atol=1e-5)


def test_mgm_views_are_global_then_row_major_crops():
    model = tiny_model("mgm_hd_tiny")
    tower = model.model.vision_tower
    pixels = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        tokens = tower(pixels)  # (1, 80, C)
        # Crop (0, 1) is the top-right 32x32 quarter, already at CLIP size: its tokens are the 3rd block of 16.
        crop = pixels[..., :32, 32:]
        aux = tower.aux_features(pixels)[..., :8, 8:]
        expected = tower.mine(super(MGMVisionTower, tower).forward(crop), aux) + super(MGMVisionTower, tower).forward(crop)
    assert torch.allclose(tokens[:, 32:48], expected, atol=1e-5)


def test_convnext_layer_norm_eps_applies_everywhere():
    config = build_config("llava_hr_x_13b", **TOKENS)
    from gamma_mod.model.vision.convnext import build_convnext

    spec = dict(config.vision_config_hr, hidden_sizes=[8, 16, 16, 32], depths=[1, 1, 1, 1])
    norms = [m for m in build_convnext(spec).modules() if isinstance(m, torch.nn.LayerNorm)]
    assert norms and all(m.eps == 1e-5 for m in norms)


# -- real sizes on the meta device ---------------------------------------------------------------------
PUBLISHED = {  # parameter counts as published
    "vicuna-7b": 6.74e9, "vicuna-13b": 13.0e9,
    "clip-vit-l/14-336": 304e6,  # the vision transformer incl. its post-layernorm, no projection
    "convnext-large": 198e6,  # ConvNeXt-L with its ImageNet-1k head (timm convnext_large: 197.77M)
    "convnext-xxlarge": 846e6,  # ConvNeXt-XXL with its ImageNet-1k head (timm convnext_xxlarge: 846.47M)
}
REAL = {
    "llava_v1_5_7b": ("vicuna-7b", None), "llava_v1_5_13b": ("vicuna-13b", None),
    "llava_hr_7b": ("vicuna-7b", "convnext-large"), "llava_hr_13b": ("vicuna-13b", "convnext-large"),
    "llava_hr_x_13b": ("vicuna-13b", "convnext-xxlarge"),
    "mgm_hd_7b": ("vicuna-7b", "convnext-large"), "mgm_hd_13b": ("vicuna-13b", "convnext-large"),
    "gamma_mod_llava_hr_7b": ("vicuna-7b", "convnext-large"),
}


def count(module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_size_parameter_counts_on_meta(name):
    llm_name, convnext_name = REAL[name]
    config = build_config(name, vocab_size=32000, image_token_index=32000, pad_token_id=0, bos_token_id=1,
                          eos_token_id=2)
    with torch.device("meta"):
        model = LlavaLlamaForCausalLM(config)
    tower = model.model.vision_tower
    total = count(model)
    vision = count(tower)
    projector = count(model.model.mm_projector)
    routers = sum(p.numel() for n, p in model.named_parameters() if n.endswith("router.weight"))
    llm = total - vision - projector - routers
    if isinstance(tower, LlavaHRVisionTower):
        clip, convnext = tower.fast_vision_tower, tower.slow_vision_tower.vision_tower
    elif isinstance(tower, MGMVisionTower):
        clip, convnext = tower.vision_tower, tower.vision_tower_aux
    else:
        clip, convnext = tower, None
    n_clip = count(clip)
    report = f"{name}: total {total / 1e9:.3f}B | LLM {llm / 1e9:.3f}B | CLIP {n_clip / 1e6:.1f}M"
    assert abs(llm / PUBLISHED[llm_name] - 1) < 0.01, report
    assert abs(n_clip / PUBLISHED["clip-vit-l/14-336"] - 1) < 0.01, report
    if convnext is not None:
        trunk = count(convnext)
        width = config.vision_config_hr["hidden_sizes"][-1]
        with_in1k_head = trunk + 2 * width + width * 1000 + 1000  # + head norm + 1000-class fc
        report += f" | ConvNeXt trunk {trunk / 1e6:.1f}M (+IN-1k head {with_in1k_head / 1e6:.2f}M)"
        assert abs(with_in1k_head / PUBLISHED[convnext_name] - 1) < 0.01, report
        assert abs(trunk / PUBLISHED[convnext_name] - 1) < 0.01, report
        report += f" | fusion {(vision - n_clip - trunk) / 1e6:.1f}M"
    report += f" | projector {projector / 1e6:.1f}M | image tokens {config.num_image_tokens}"
    expected_tokens = {"clip": 576, "llava_hr": 1024, "mgm": 2880}[config.vision_tower_type]
    assert config.num_image_tokens == tower.num_image_tokens == expected_tokens
    print(report)


def test_every_shipped_model_yaml_builds():
    # Family specs (`family:`, HF config classes) are built by gamma_mod.families.specs: tests/test_family_specs.py.
    for path in sorted(p for p in (CONFIG_DIR / "model").glob("*.yaml") if not is_family_spec(p)):
        config = build_config(path, **TOKENS)
        assert config.num_image_tokens > 0, path.name
