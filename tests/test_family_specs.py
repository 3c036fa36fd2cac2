"""Model specs of the HF families (gamma_mod/families/specs.py): tiny twins that build and run, real-size
configs whose parameter counts on the meta device equal the published ones."""

import pytest
import torch
import transformers
import yaml

from gamma_mod.families.specs import (FamilySpec, FamilySpecError, build_family_config, build_family_model,
                                      count_parameters, is_family_spec, load_family_spec)
from gamma_mod.model.builder import load_model_spec
from gamma_mod.packaged import CONFIG_DIR

TINY = ("llava_hf_tiny", "llava_onevision_tiny", "qwen2_5_vl_tiny", "qwen3_vl_tiny")
REAL = ("llava_hf_7b", "llava_onevision_qwen2_7b", "qwen2_5_vl_7b", "qwen3_vl_8b")
CONFIG_CLASS = {"llava_hf": transformers.LlavaConfig, "llava_onevision": transformers.LlavaOnevisionConfig,
                "qwen2_5_vl": transformers.Qwen2_5_VLConfig, "qwen3_vl": transformers.Qwen3VLConfig}
# The tiny twins' special-token ids as documented in gamma_mod/families/specs.py (the vocabulary's last ids).
TINY_IDS = {
    "llava_hf_tiny": dict(image_token_id=511, pad_token_id=510, bos_token_id=1, eos_token_id=2),
    "llava_onevision_tiny": dict(image_token_id=510, video_token_id=511, pad_token_id=507, bos_token_id=507,
                                 eos_token_id=509),
    "qwen2_5_vl_tiny": dict(image_token_id=510, video_token_id=511, vision_start_token_id=507,
                            vision_end_token_id=508, pad_token_id=504, bos_token_id=504, eos_token_id=506),
    "qwen3_vl_tiny": dict(image_token_id=510, video_token_id=511, vision_start_token_id=507,
                          vision_end_token_id=508, pad_token_id=504, bos_token_id=504, eos_token_id=506),
}


def _token_id(config, key):
    if key in ("pad_token_id", "bos_token_id", "eos_token_id"):
        return getattr(config.get_text_config(), key)
    return getattr(config, key)


def test_every_family_yaml_loads_into_the_family_class():
    names = sorted(p.stem for p in (CONFIG_DIR / "model").glob("*.yaml") if is_family_spec(p))
    assert names == sorted(TINY + REAL)
    for name in names:
        spec = load_family_spec(name)
        config = build_family_config(spec)
        assert type(config) is CONFIG_CLASS[spec.family], name
        assert config.model_type == spec.config_class.model_type
    # The LLaVA-fork specs are not family specs.
    assert not is_family_spec("tiny") and not is_family_spec("llava_v1_5_7b")


@pytest.mark.parametrize("name", TINY)
def test_tiny_twin_token_ids_sit_at_the_end_of_a_512_vocab(name):
    config = build_family_config(name)
    text = config.get_text_config()
    assert text.vocab_size == 512
    assert {key: _token_id(config, key) for key in TINY_IDS[name]} == TINY_IDS[name]
    # 2-4 decoder layers, hidden 32-64, GQA.
    assert 2 <= text.num_hidden_layers <= 4 and 32 <= text.hidden_size <= 64
    assert text.num_key_value_heads < text.num_attention_heads


def _inputs(name, model, pixels_seed):
    """(input_ids, vision kwargs) of one text+image prompt for the family, built by hand (no processor)."""
    g = torch.Generator().manual_seed(pixels_seed)
    ids = TINY_IDS[name]
    if name == "llava_hf_tiny":
        # 32x32 image, patch 8: 16 patch tokens (the CLS token is dropped by the "default" strategy).
        row = [1, 5, 6] + [ids["image_token_id"]] * 16 + [7, 8, 9]
        return torch.tensor([row]), dict(pixel_values=torch.randn(1, 3, 32, 32, generator=g))
    if name == "llava_onevision_tiny":
        # 32x32 image, best pinpoint 32x32: base tile (4x4 = 16 features) + one 4x4 tile with an image_newline
        # after each of its 4 rows (4x5 = 20): 36 image tokens. pixel_values (B, tiles, 3, 32, 32).
        row = [ids["bos_token_id"], 5] + [ids["image_token_id"]] * 36 + [7, 8]
        return torch.tensor([row]), dict(pixel_values=torch.randn(1, 2, 3, 32, 32, generator=g),
                                         image_sizes=torch.tensor([[32, 32]]))
    # Qwen: a 4x4 patch grid (1 frame = temporal patch of 2), merged 2x2 -> 4 image tokens between
    # <|vision_start|> and <|vision_end|>. Each patch row holds 3·2·p·p values.
    patch = model.config.vision_config.patch_size
    row = [505, 5, ids["vision_start_token_id"]] + [ids["image_token_id"]] * 4 + [ids["vision_end_token_id"], 7, 8]
    input_ids = torch.tensor([row])
    # mm_token_type_ids (0 text, 1 image): what the Qwen processors return; Qwen3-VL needs it for M-RoPE.
    types = (input_ids == ids["image_token_id"]).long()
    return input_ids, dict(pixel_values=torch.randn(16, 3 * 2 * patch * patch, generator=g),
                           image_grid_thw=torch.tensor([[1, 4, 4]]), mm_token_type_ids=types)


@pytest.mark.parametrize("name", TINY)
def test_tiny_twin_builds_and_runs_text_and_image(name):
    torch.manual_seed(0)
    model = build_family_model(name).eval()
    assert type(model).__name__ == load_family_spec(name).model_class.__name__
    input_ids, vision = _inputs(name, model, pixels_seed=1)
    with torch.no_grad():
        out = model(input_ids=input_ids, **vision)
        other = model(input_ids=input_ids, **_inputs(name, model, pixels_seed=2)[1])
        text_only = model(input_ids=torch.tensor([[5, 6, 7, 8]]))
    assert out.logits.shape == (1, input_ids.shape[1], 512) and torch.isfinite(out.logits).all()
    assert text_only.logits.shape == (1, 4, 512) and torch.isfinite(text_only.logits).all()
    # The image reaches the decoder: other pixels change the logits after the image, not before it.
    first_image = int((input_ids[0] == TINY_IDS[name]["image_token_id"]).nonzero()[0])
    assert torch.allclose(out.logits[0, :first_image], other.logits[0, :first_image], atol=1e-6)
    assert not torch.allclose(out.logits[0, -1], other.logits[0, -1], atol=1e-4)
    # The meta-device count is the real model's.
    assert count_parameters(name) == sum(p.numel() for p in model.parameters())


# Published totals ("Model size" on each model page = the safetensors metadata total, 3 significant digits;
# OpenExplorer's card gives Qwen3-VL-8B's to 4), so the tolerance is half a unit of the last published digit.
PUBLISHED = {
    # https://huggingface.co/llava-hf/llava-1.5-7b-hf  (Safetensors, Model size: 7.06B params)
    "llava_hf_7b": (7.06e9, 0.005e9),
    # https://huggingface.co/llava-hf/llava-onevision-qwen2-7b-ov-hf  (Safetensors, Model size: 8.03B params)
    "llava_onevision_qwen2_7b": (8.03e9, 0.005e9),
    # https://huggingface.co/Qwen/Qwen2.5-VL-7B-Instruct  (Safetensors, Model size: 8.29B params)
    "qwen2_5_vl_7b": (8.29e9, 0.005e9),
    # https://huggingface.co/Qwen/Qwen3-VL-8B-Instruct  (Safetensors, Model size: 8.77B params) and
    # https://huggingface.co/OpenExplorer/Qwen3-VL-8B-Instruct ("Total model parameters 8.767B", counted from
    # the tensors of the upstream checkpoint)
    "qwen3_vl_8b": (8.767e9, 0.0005e9),
}


@pytest.mark.parametrize("name", REAL)
def test_real_size_parameter_count_is_the_published_one(name):
    published, tolerance = PUBLISHED[name]
    assert abs(count_parameters(name) - published) <= tolerance


def _qwen_decoder_params(vocab, d, d_ff, layers, heads, kv_heads, head_dim, qkv_bias, qk_norm):
    """Qwen2.5 / Qwen3 text decoder + untied lm_head by hand: embeddings and lm_head V·d each; per layer
    q (d·H·hd), k and v (d·KV·hd each, + biases in Qwen2.5), o (H·hd·d), gate/up/down (3·d·d_ff), two
    RMSNorms (2·d), Qwen3's q/k norms (2·hd); the final norm d."""
    q, kv = heads * head_dim, kv_heads * head_dim
    layer = d * q + 2 * d * kv + q * d + 3 * d * d_ff + 2 * d
    layer += (q + 2 * kv) if qkv_bias else 0
    layer += 2 * head_dim if qk_norm else 0
    return 2 * vocab * d + layers * layer + d


@pytest.mark.parametrize("name, expected", [
    ("qwen2_5_vl_7b", _qwen_decoder_params(152064, 3584, 18944, 28, 28, 4, 128, qkv_bias=True, qk_norm=False)),
    ("qwen3_vl_8b", _qwen_decoder_params(151936, 4096, 12288, 36, 32, 8, 128, qkv_bias=False, qk_norm=True)),
])
def test_real_size_decoder_count_by_hand(name, expected):
    # GQA and the untied lm_head decide most of the total: pin the decoder part exactly.
    model = build_family_model(name, device="meta")
    counted = sum(p.numel() for p in model.model.language_model.parameters()) + model.lm_head.weight.numel()
    assert counted == expected


def test_token_id_overrides_go_where_the_family_keeps_them():
    llava = build_family_config("llava_hf_tiny", image_token_id=300, vocab_size=320, pad_token_id=301)
    assert llava.image_token_index == 300 and llava.text_config.vocab_size == 320
    assert llava.text_config.pad_token_id == 301
    qwen = build_family_config("qwen3_vl_tiny", video_token_id=7, eos_token_id=8)
    assert qwen.video_token_id == 7 and qwen.text_config.eos_token_id == 8 and qwen.image_token_id == 510
    # The spec itself is untouched by a build with overrides.
    assert build_family_config("qwen3_vl_tiny").video_token_id == 511
    with pytest.raises(FamilySpecError, match="no video_token_id"):
        build_family_config("llava_hf_tiny", video_token_id=5)
    with pytest.raises(FamilySpecError, match="not a token field"):
        build_family_config("llava_hf_tiny", hidden_size=5)


def test_mod_section_is_validated_against_the_text_layers(tmp_path):
    spec = yaml.safe_load((CONFIG_DIR / "model" / "qwen2_5_vl_tiny.yaml").read_text())
    spec["mod"] = {"mod_layers_idx": [1, 2], "capacity_factor": 0.5}
    mod = load_family_spec(spec).mod_config()
    assert mod.mod_layers_idx == [1, 2] and mod.skip_ratio(1) == 0.5
    path = tmp_path / "bad_mod.yaml"
    path.write_text(yaml.safe_dump({**spec, "mod": {"mod_layers_idx": [1, 9]}}))
    with pytest.raises(FamilySpecError, match=r"bad_mod\.yaml.*out of range"):
        load_family_spec(path)


@pytest.mark.parametrize("change, message", [
    (lambda s: s.update(family="qwen9"), "family 'qwen9' is not one of"),
    (lambda s: s.update(extra=1), r"unknown sections \['extra'\]"),
    (lambda s: s["config"]["text_config"].update(hidden_sizee=3), r"hidden_sizee.*config.text_config"),
    (lambda s: s["config"]["vision_config"].update(depht=3), r"depht.*config.vision_config"),
    (lambda s: s["config"].update(image_token=3), r"image_token'.*in config "),
    (lambda s: s["config"]["text_config"].update(hidden_size="big"), "Qwen2_5_VLConfig rejects"),
])
def test_bad_specs_name_the_file_and_the_key(tmp_path, change, message):
    spec = yaml.safe_load((CONFIG_DIR / "model" / "qwen2_5_vl_tiny.yaml").read_text())
    change(spec)
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(FamilySpecError, match="broken.yaml") as error:
        load_family_spec(path)
    assert error.match(message)


def test_fork_and_family_specs_point_at_each_other():
    with pytest.raises(FamilySpecError, match="not a family spec"):
        load_family_spec("tiny")
    with pytest.raises(ValueError, match="family spec.*gamma_mod.families.specs"):
        load_model_spec("qwen3_vl_tiny")
    assert isinstance(load_family_spec(load_family_spec("qwen3_vl_tiny")), FamilySpec)
