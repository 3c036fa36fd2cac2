"""Official-layout checkpoint folders (sharded pytorch_model-*.bin + index) load into our classes."""

import json
import re

import pytest
import torch

import gamma_mod  # noqa: F401
from gamma_mod.mod.convert import convert_to_mod
from gamma_mod.model.builder import build_config
from gamma_mod.model.checkpoints import (ModMGMForCausalLM, load_official_checkpoint, read_state_dict,
                                         timm_convnext_table)
from gamma_mod.model.llava_llama import LlavaLlamaForCausalLM, ModLlavaLlamaForCausalLM
from gamma_mod.model.vision.convnext import build_convnext
from gamma_mod.model.vision.presets import CONVNEXT_PRESETS

TOKENS = dict(vocab_size=64, image_token_index=5, pad_token_id=0, bos_token_id=1, eos_token_id=2)


# -- the official layout, written independently of the loader's tables (regex renames of our keys) ----
def to_timm(key: str, layer_scale: str) -> str:
    """transformers ConvNext trunk key -> timm ConvNeXt key."""
    key = key.replace("embeddings.patch_embeddings.", "stem.0.").replace("embeddings.layernorm.", "stem.1.")
    key = re.sub(r"encoder\.stages\.(\d+)\.downsampling_layer\.", r"stages.\1.downsample.", key)
    key = re.sub(r"encoder\.stages\.(\d+)\.layers\.(\d+)\.", r"stages.\1.blocks.\2.", key)
    for ours, theirs in (("dwconv", "conv_dw"), ("layernorm", "norm"), ("pwconv1", "mlp.fc1"), ("pwconv2", "mlp.fc2")):
        key = key.replace(f".{ours}.", f".{theirs}.")
    return key.replace("layer_scale_parameter", layer_scale)


def official_state_dict(model) -> dict[str, torch.Tensor]:
    kind = model.config.vision_tower_type
    out = {}
    for key, value in model.state_dict().items():
        if kind == "llava_hr" and ".slow_vision_tower.vision_tower." in key:
            prefix, rest = key.split(".slow_vision_tower.vision_tower.")
            key = f"{prefix}.slow_vision_tower.vision_tower.{to_timm(rest, 'weight')}"  # LLaVA-HR renamed gamma
        elif kind == "mgm" and key.startswith("model.vision_tower.vision_tower_aux."):
            rest = to_timm(key[len("model.vision_tower.vision_tower_aux."):], "gamma")
            key = "model.vision_tower_aux." + rest.replace("stem.", "vision_stem.", 1).replace("stages.", "vision_stages.", 1)
        elif kind == "mgm" and key.startswith("model.vision_tower.vlm_uni_"):
            key = key.replace("model.vision_tower.", "model.", 1)
        out[key] = value.clone()
    if kind == "llava_hr":  # the timm CLIP head LLaVA-HR's ConvNeXt carries (unused by the tower)
        head = "model.vision_tower.slow_vision_tower.vision_tower.head."
        width = model.config.vision_config_hr["hidden_sizes"][-1]
        out.update({head + "norm.weight": torch.ones(width), head + "norm.bias": torch.zeros(width),
                    head + "pre_logits.fc.weight": torch.randn(width, width), head + "pre_logits.fc.bias": torch.zeros(width),
                    head + "fc.weight": torch.randn(768, width), head + "fc.bias": torch.zeros(768)})
        # A buffer transformers < 4.31 saved.
        clip = "model.vision_tower.fast_vision_tower.vision_tower.vision_model.embeddings."
        out[clip + "position_ids"] = torch.arange(17).unsqueeze(0)
    return out


def official_config(model) -> dict:
    """config.json with the official field names (no vision_config dicts: towers resolve by name)."""
    c = model.config
    data = {k: getattr(c, k) for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                                       "num_key_value_heads", "max_position_embeddings", "rms_norm_eps", "vocab_size",
                                       "pad_token_id", "bos_token_id", "eos_token_id", "tie_word_embeddings")}
    data.update(mm_projector_type="mlp2x_gelu", mm_hidden_size=c.mm_hidden_size, mm_vision_select_layer=-2,
                mm_vision_select_feature="patch", image_aspect_ratio="pad", mm_use_im_start_end=False,
                tune_mm_mlp_adapter=False, architectures=["X"], transformers_version="4.31.0",
                vision_config=c.vision_config)  # tiny CLIP: no published name to resolve it by
    if c.vision_tower_type == "llava_hr":
        data.update(model_type="mod_llava_llama" if c.mod else "llava_llama", mm_vision_tower="openai/clip-vit-large-patch14-336",
                    vision_tower_slow="convnext_large_mlp.clip_laion2b_ft_320", is_multipath_encoder=True,
                    input_image_size=c.input_image_size, freeze_vision=False, vision_config_hr=c.vision_config_hr)
    elif c.vision_tower_type == "mgm":
        data.update(model_type="mod_mgm" if c.mod else "mgm", mm_vision_tower="model_zoo/OpenAI/clip-vit-large-patch14-336",
                    mm_vision_tower_aux="model_zoo/OpenAI/openclip-convnext-large-d-320-laion2B-s29B-b131K-ft-soup",
                    image_size_aux=c.image_size_aux, image_grid=c.image_grid, image_global=c.image_global,
                    mm_hidden_size_aux=sum(c.vision_config_hr["hidden_sizes"]), vision_config_hr=c.vision_config_hr)
    else:
        data.update(model_type="mod_llava_llama" if c.mod else "llava_llama",
                    mm_vision_tower="openai/clip-vit-large-patch14-336")
    if c.mod:
        data["mod"] = {k: c.mod[k] for k in ("mod_enable", "mod_mode", "mod_layers_idx", "router_aux_loss_coef")}
        data["mod"]["capacity_factor"] = c.mod["skip_ratio"]  # the released files' name
    return data


def write_sharded(folder, state: dict[str, torch.Tensor], config: dict, shards: int = 3) -> None:
    folder.mkdir(parents=True)
    keys = list(state)
    weight_map = {}
    for i in range(shards):
        name = f"pytorch_model-{i + 1:05d}-of-{shards:05d}.bin"
        part = {k: state[k] for k in keys[i::shards]}
        torch.save(part, folder / name)
        weight_map.update({k: name for k in part})
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (folder / "config.json").write_text(json.dumps(config))


def source_model(name: str, mod: bool) -> LlavaLlamaForCausalLM:
    torch.manual_seed(0)
    model = LlavaLlamaForCausalLM(build_config(name, **TOKENS)).eval()
    with torch.no_grad():  # non-trivial values everywhere, zero-initialised adapter projections included
        for p in model.model.vision_tower.parameters():
            p.add_(0.01 * torch.randn_like(p))
    if mod:
        convert_to_mod(model, [1, 2], skip_ratio=0.5)
    return model


def inputs(config):
    t, size = config.num_image_tokens, config.image_input_size
    ids = torch.tensor([[1, 11, 12] + [5] * t + [20, 21, 22]])
    return dict(input_ids=ids, pixel_values=torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0)))


CASES = [("llava_v1_5_tiny", False, LlavaLlamaForCausalLM), ("llava_hr_tiny", False, LlavaLlamaForCausalLM),
         ("llava_hr_tiny", True, ModLlavaLlamaForCausalLM), ("mgm_hd_tiny", False, LlavaLlamaForCausalLM),
         ("mgm_hd_tiny", True, ModMGMForCausalLM)]


@pytest.mark.parametrize("name,mod,cls", CASES)
def test_official_sharded_folder_loads_with_identical_outputs(name, mod, cls, tmp_path):
    model = source_model(name, mod)
    state = official_state_dict(model)
    # A misleading folder name: loading depends on config.json and the weights only.
    folder = tmp_path / "llava-v1.5-7b-not-what-it-says"
    write_sharded(folder, state, official_config(model))
    loaded = load_official_checkpoint(folder, image_token_index=5)
    assert type(loaded) is cls
    assert loaded.config.vision_tower_type == model.config.vision_tower_type
    assert loaded.model.mod_layer_indices == model.model.mod_layer_indices
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    with torch.no_grad():
        assert torch.equal(loaded(**inputs(model.config)).logits, model(**inputs(model.config)).logits)


@pytest.mark.parametrize("problem", ["unexpected", "missing", "shape"])
def test_key_problems_are_errors_naming_the_keys(problem, tmp_path):
    model = source_model("llava_hr_tiny", mod=True)
    state = official_state_dict(model)
    if problem == "unexpected":
        state["model.vision_tower.align_stages.1.fast_proj.weight"] = torch.zeros(1)
        match = r"unexpected keys.*align_stages\.1\.fast_proj"
    elif problem == "missing":
        del state["model.vision_tower.slow_vision_tower.vision_tower.stages.2.blocks.1.mlp.fc1.weight"]
        match = r"missing keys.*encoder\.stages\.2\.layers\.1\.pwconv1\.weight"
    else:
        state["model.mm_projector.0.weight"] = torch.zeros(3, 3)
        match = r"shape mismatches.*mm_projector\.0\.weight"
    write_sharded(tmp_path / "ckpt", state, official_config(model))
    with pytest.raises(ValueError, match=match):
        load_official_checkpoint(tmp_path / "ckpt")


def test_differing_router_copies_warn_and_the_lowest_layer_wins(tmp_path):
    model = source_model("llava_hr_tiny", mod=True)
    state = official_state_dict(model)
    state["model.layers.2.router.weight"] = torch.randn_like(state["model.layers.2.router.weight"])
    write_sharded(tmp_path / "ckpt", state, official_config(model))
    with pytest.warns(UserWarning, match="router copies differ"):
        loaded = load_official_checkpoint(tmp_path / "ckpt")
    assert torch.equal(loaded.model.layers[2].router.weight, state["model.layers.1.router.weight"])


class NotATensor:
    pass


def test_shards_are_read_without_unrestricted_pickle(tmp_path):
    torch.save({"x": NotATensor()}, tmp_path / "pytorch_model.bin")
    with pytest.raises(Exception, match="(?i)weights_only|unsupported|global"):
        read_state_dict(tmp_path)


def test_index_must_match_its_shards(tmp_path):
    torch.save({"a": torch.zeros(1)}, tmp_path / "s1.bin")
    (tmp_path / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": {"a": "s1.bin", "b": "s1.bin"}}))
    with pytest.raises(ValueError, match="lists 2"):
        read_state_dict(tmp_path)


@pytest.mark.parametrize("preset,head", [("convnext_large", True), ("convnext_xxlarge", True), ("convnext_large", False)])
def test_timm_convnext_table_covers_both_sides(preset, head):
    """Every timm key of the real trunk has a target, every transformers parameter a source."""
    spec = CONVNEXT_PRESETS[preset]
    with torch.device("meta"):
        ours = build_convnext(spec).state_dict()
    table = timm_convnext_table(spec["depths"], "", "", head=head)
    targets = {t for t in table.values() if t is not None}
    assert targets == set(ours)
    # The table's timm side, built by an independent rename of our keys (either layer-scale name).
    for scale in ("gamma", "weight"):
        assert {to_timm(k, scale) for k in ours} <= set(table)
    assert all(table[to_timm(k, "gamma")] == k for k in ours)
    n_dropped = sum(t is None for t in table.values())
    assert n_dropped == (6 if head else 0)


def test_official_real_size_config_resolves_towers_by_name():
    from gamma_mod.model.checkpoints import CONFIG_CLASSES

    hr = CONFIG_CLASSES["mod_llava_llama"].from_dict(dict(
        model_type="mod_llava_llama", mm_vision_tower="openai/clip-vit-large-patch14-336",
        vision_tower_slow="convnext_xxlarge.clip_laion2b_soup", is_multipath_encoder=True, input_image_size=1024,
        mm_hidden_size=1024, mod_enable=True, mod_layers_idx=[1, 2], capacity_factor=0.5))
    assert hr.vision_tower_type == "llava_hr" and hr.vision_config_hr["hidden_sizes"][-1] == 3072
    assert hr.vision_config["image_size"] == 336 and hr.num_image_tokens == 1024 and hr.mod["mod_layers_idx"] == [1, 2]
    mgm = CONFIG_CLASSES["mod_mgm"].from_dict(dict(
        model_type="mod_mgm", mm_vision_tower="model_zoo/OpenAI/clip-vit-large-patch14-336",
        mm_vision_tower_aux="model_zoo/OpenAI/openclip-convnext-large-d-320-laion2B-s29B-b131K-ft-soup",
        image_size_aux=1536, image_grid=2, image_global=True, mm_hidden_size=1024))
    assert mgm.vision_tower_type == "mgm" and mgm.num_image_tokens == 2880 and mgm.image_input_size == 1536
    with pytest.raises(ValueError, match="unknown ConvNeXt tower"):
        CONFIG_CLASSES["llava_llama"].from_dict(dict(
            model_type="llava_llama", mm_vision_tower="openai/clip-vit-large-patch14-336",
            vision_tower_slow="resnet50", is_multipath_encoder=True))
