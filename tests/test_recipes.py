"""The shipped 7B recipes resolve to the official gamma-MoD / Mini-Gemini training arguments, argument for argument.

Each recipe goes through our config loader on the tiny twin of its family (same code path, test-sized
model) into (a) the HF TrainingArguments we pass, (b) the DeepSpeed config HF fills from them, (c) the
model config and MoD layers, (d) the trainable parameter names; every value is compared with a table
of the official values written out below, each with the file it comes from.

Official files (read-only references):
  HR1  = luogen1996/LLaVA-HR and Yaxin9Luo/Gamma-MOD scripts/v1_5/pretrain_llava_hr.sh
  HR2  = Yaxin9Luo/Gamma-MOD scripts/v1_5/fine_tune_mod.sh
  MGM2 = Yaxin9Luo/Gamma-MOD gamma_mod/MGM/scripts/llama/train/stage_2_full_v7b_672_hr_1536.sh (HD settings)
  MMOD = Yaxin9Luo/Gamma-MOD gamma_mod/MGM/scripts/llama/train/mod_mgm_finetune.sh (MoD settings)
  TPY  = Yaxin9Luo/Gamma-MOD gamma_mod/train/train.py dataclass defaults (MGM: dvlab-research/MGM mgm/train/train.py)
  Z2   = Yaxin9Luo/Gamma-MOD scripts/zero2.json ("gradient_clipping": 1.0)
  Z3   = Yaxin9Luo/Gamma-MOD scripts/zero3.json (no gradient_clipping; DeepSpeed 0.9.5's default is 0.0,
         microsoft/DeepSpeed v0.9.5 deepspeed/runtime/constants.py GRADIENT_CLIPPING_DEFAULT)
"""

import dataclasses
import os
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from gamma_mod.config import load_config
from gamma_mod.train.args import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "configs" / "train"

# -- the official tables --------------------------------------------------------------------------------
# HF TrainingArguments fields (what the official scripts pass, or their train.py default).
TRAINING_ARGS = {
    "llava_hr_7b_stage1": {
        "learning_rate": 1e-3,                  # HR1 --learning_rate 1e-3
        "lr_scheduler_type": "cosine",          # HR1 --lr_scheduler_type "cosine"
        "warmup_steps": 0.03,                   # HR1 --warmup_ratio 0.03
        "num_train_epochs": 1,                  # HR1 --num_train_epochs 1
        "per_device_train_batch_size": 32,      # HR1 --per_device_train_batch_size 32
        "gradient_accumulation_steps": 1,       # HR1 --gradient_accumulation_steps 1
        "weight_decay": 0.0,                    # HR1 --weight_decay 0.
        "bf16": True,                           # HR1 --bf16 True
        "tf32": True,                           # HR1 --tf32 True
        "activation_checkpointing": True,       # HR1 --gradient_checkpointing True
        "dataloader_num_workers": 4,            # HR1 --dataloader_num_workers 4
        "logging_steps": 1,                     # HR1 --logging_steps 1
        "save_total_limit": 1,                  # HR1 --save_total_limit 1
        "optim": "adamw_torch",                 # TPY TrainingArguments.optim default
        "seed": 42,                             # HF TrainingArguments default (the scripts pass none)
        "max_grad_norm": 1.0,                   # Z2 "gradient_clipping": 1.0
    },
    "llava_hr_7b_stage2_mod": {
        "learning_rate": 2e-5,                  # HR2 --learning_rate 2e-5
        "lr_scheduler_type": "cosine",          # HR2
        "warmup_steps": 0.03,                   # HR2 --warmup_ratio 0.03
        "num_train_epochs": 1,                  # HR2
        "per_device_train_batch_size": 8,       # HR2 --per_device_train_batch_size 8
        "gradient_accumulation_steps": 2,       # HR2 --gradient_accumulation_steps 2
        "weight_decay": 0.0,                    # HR2
        "bf16": True,                           # HR2
        "tf32": True,                           # HR2 --tf32 True
        "activation_checkpointing": True,       # HR2
        "dataloader_num_workers": 4,            # HR2
        "logging_steps": 1,                     # HR2
        "save_total_limit": 1,                  # HR2
        "optim": "adamw_torch",                 # TPY
        "seed": 42,                             # HF default
        "max_grad_norm": 0.0,                   # Z3 has no gradient_clipping -> DeepSpeed 0.9.5 default 0.0
    },
    "mgm_hd_7b_stage2_mod": {
        "learning_rate": 2e-5,                  # MGM2 --learning_rate 2e-5
        "lr_scheduler_type": "cosine",          # MGM2
        "warmup_steps": 0.03,                   # MGM2
        "num_train_epochs": 1,                  # MGM2
        "per_device_train_batch_size": 8,       # MGM2 --per_device_train_batch_size 8
        "gradient_accumulation_steps": 2,       # MGM2 --gradient_accumulation_steps 2
        "weight_decay": 0.0,                    # MGM2
        "bf16": True,                           # MGM2
        "tf32": True,                           # MGM2
        "activation_checkpointing": True,       # MGM2
        "dataloader_num_workers": 4,            # MGM2
        "logging_steps": 1,                     # MGM2
        "save_steps": 1000,                     # MGM2 --save_steps 1000
        "save_total_limit": 1,                  # MGM2
        "optim": "adamw_torch",                 # MGM train.py TrainingArguments.optim default
        "seed": 42,                             # HF default
        "max_grad_norm": 0.0,                   # zero3.json without gradient_clipping (as Z3)
    },
}
# Documented deviations (README "Training the 7B / 13B recipes"): official value, ours.
DEVIATIONS = {
    "llava_hr_7b_stage1": {"save_steps": (24000, 1000)},      # HR1 --save_steps 24000: no checkpoint in the epoch
    "llava_hr_7b_stage2_mod": {"save_steps": (50000, 1000)},  # HR2 --save_steps 50000: idem
}
# The DeepSpeed config after HF fills its "auto" values from the TrainingArguments (single process).
DEEPSPEED = {
    "llava_hr_7b_stage1": {"stage": 2, "gradient_clipping": 1.0},      # HR1 --deepspeed zero2.json; Z2
    "llava_hr_7b_stage2_mod": {"stage": 3, "gradient_clipping": 0.0},  # HR2 --deepspeed zero3.json; Z3
    "mgm_hd_7b_stage2_mod": {"stage": 3, "gradient_clipping": 0.0},    # MGM2 --deepspeed zero3.json
}
# Global batch on the official 8 GPUs = per-device x accumulation x 8.
GLOBAL_BATCH = {"llava_hr_7b_stage1": 256, "llava_hr_7b_stage2_mod": 128, "mgm_hd_7b_stage2_mod": 128}
# Data and model-config values.
OTHER = {
    "llava_hr_7b_stage1": {
        "template": "plain",                    # HR1 --version plain
        "max_length": 2048,                     # HR1 --model_max_length 2048
        "group_by_modality_length": False,      # HR1 passes none; TPY default False
        "input_image_size": 384,                # HR1 --input_image_size 384
        "image_aspect_ratio": "square",         # HR1 passes none; TPY DataArguments default 'square'
        "attn_implementation": "flash_attention_2",  # HR1 runs train_mem.py (flash-attn patch)
    },
    "llava_hr_7b_stage2_mod": {
        "template": "vicuna_v1",                # HR2 --version v1
        "max_length": 2496,                     # HR2 --model_max_length 2496
        "group_by_modality_length": True,       # HR2 --group_by_modality_length True
        "input_image_size": 1024,               # HR2 --input_image_size 1024
        "image_aspect_ratio": "pad",            # HR2 --image_aspect_ratio pad
        "attn_implementation": "flash_attention_2",  # HR2 train_mem.py
    },
    "mgm_hd_7b_stage2_mod": {
        "template": "vicuna_v1",                # MGM2 --version v1
        "max_length": 4096,                     # MGM2 --model_max_length 4096
        "group_by_modality_length": True,       # MGM2
        "image_size_aux": 1536,                 # MGM2 AUX_SIZE=1536
        "image_grid": 2,                        # MGM2 IMAGE_GRID=2
        "image_global": True,                   # MGM2 IMAGE_GLOBAL=True
        "image_aspect_ratio": "pad",            # MGM2
        "attn_implementation": "flash_attention_2",  # MGM2 train_mem.py
    },
}
# MoD on the real 32-layer model: --mod_mode arank_mod keeps {0, 1, 2, L-1} dense (Gamma-MOD
# llava_llama_mod.py initialize_mod_modules), --capacity_factor 0.5, --router_aux_loss_coef 0.01.
MOD = {
    "llava_hr_7b_stage2_mod": {"layers": list(range(3, 31)), "skip_ratio": 0.5, "aux": 0.01},  # HR2
    "mgm_hd_7b_stage2_mod": {"layers": list(range(3, 31)), "skip_ratio": 0.5, "aux": 0.01},    # MMOD
}
# The 13B budget by the same rule: 36 of 40 layers (DESIGN; arank_mod on 40 layers).
MOD_13B_LAYERS = list(range(3, 39))
# The real model specs behind the recipes (configs/model/*.yaml).
SPEC = {
    "llava_hr_7b_stage1": "llava_hr_7b", "llava_hr_7b_stage2_mod": "llava_hr_7b", "mgm_hd_7b_stage2_mod": "mgm_hd_7b",
}
SPEC_VALUES = {
    "llava_hr_7b": {"mm_projector_type": "mlp2x_gelu", "mm_vision_select_layer": -2,   # HR1/HR2 flags
                    "mm_vision_tower": "openai/clip-vit-large-patch14-336",            # --vision_tower
                    "vision_tower_slow": "convnext_large_mlp.clip_laion2b_ft_320"},    # --vision_tower_slow
    "mgm_hd_7b": {"mm_projector_type": "mlp2x_gelu", "mm_vision_select_layer": -2,     # MGM2 flags
                  "mm_vision_tower": "openai/clip-vit-large-patch14-336",              # --vision_tower
                  "mm_vision_tower_aux": "openclip-convnext-large-d-320-laion2B-s29B-b131K-ft-soup"},  # --vision_tower_aux
}
TWIN = {"llava_hr_7b": "llava_hr_tiny", "mgm_hd_7b": "mgm_hd_tiny"}


def expected_trainable(recipe: str, names: list[str]) -> set[str]:
    """The official rule for which parameters train, applied to our parameter names."""
    if recipe == "llava_hr_7b_stage1":
        # TPY: tune_mm_mlp_adapter -> only mm_projector; is_multipath_encoder -> every name containing
        # 'align_stages'. The MR-Adapters (align_stages_latent) exist only with freeze_vision False
        # (multipath_encoder_wapper.py enable_adapter), so in stage 1 they are absent, i.e. frozen here.
        return {n for n in names if "mm_projector" in n or ("align_stages" in n and "align_stages_latent" not in n)}
    if recipe == "llava_hr_7b_stage2_mod":
        # HR2 --freeze_vision False: nothing calls requires_grad_(False); every parameter trains.
        return set(names)
    if recipe == "mgm_hd_7b_stage2_mod":
        # MGM clip_encoder.py / openclip_encoder.py load_model: the CLIP tower and the ConvNeXt stem/stages
        # are frozen; LLM, router, projector and vlm_uni_* train.
        return {n for n in names if not n.startswith(("model.vision_tower.vision_tower.",
                                                      "model.vision_tower.vision_tower_aux."))}
    raise KeyError(recipe)


# -- resolving a recipe on its tiny twin ---------------------------------------------------------------
@pytest.fixture(scope="module")
def tokenizer():
    from gamma_mod.data.tokenizer import build_tokenizer

    return build_tokenizer(["a", "photo", "of", "cat"])


def twin_overrides(recipe: str) -> list[str]:
    over = [f"model.spec={TWIN[SPEC[recipe]]}", "model.init=null", "output_dir=/tmp/unused"]
    if recipe in MOD:
        over.append("mod.dense_layers=[0,-1]")  # the tiny twin has 4 layers: its own budget (layers 1, 2)
    return over


@pytest.mark.parametrize("recipe", sorted(TRAINING_ARGS))
def test_recipe_training_arguments_match_the_official_table(recipe):
    from transformers import TrainingArguments
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig, unset_hf_deepspeed_config

    from gamma_mod.train.train import training_arguments_kwargs

    cfg = load_config(TrainConfig, RECIPES / f"{recipe}.yaml", twin_overrides(recipe))
    kwargs = training_arguments_kwargs(cfg, cuda=True)  # the arguments an 8-GPU run gets
    for key, value in TRAINING_ARGS[recipe].items():
        assert kwargs.get(key, TrainingArguments.__dataclass_fields__[key].default) == value, key
    for key, (_official, ours) in DEVIATIONS.get(recipe, {}).items():
        assert kwargs[key] == ours, key
    assert kwargs["per_device_train_batch_size"] * kwargs["gradient_accumulation_steps"] * 8 == GLOBAL_BATCH[recipe]
    assert training_arguments_kwargs(cfg, cuda=False)["tf32"] is None  # HF refuses tf32 without CUDA

    # DeepSpeed: HF's own "auto" filling, from TrainingArguments built on this CPU machine.
    cpu = training_arguments_kwargs(cfg, cuda=False)
    path = cpu.pop("deepspeed")
    args = TrainingArguments(**cpu)
    assert args.optim == "adamw_torch" and args.max_grad_norm == TRAINING_ARGS[recipe]["max_grad_norm"]
    ds = HfTrainerDeepSpeedConfig(str(ROOT / path))
    try:
        ds.trainer_config_process(args)
        assert ds.config["zero_optimization"]["stage"] == DEEPSPEED[recipe]["stage"]
        assert ds.config["gradient_clipping"] == DEEPSPEED[recipe]["gradient_clipping"]
        assert not ds.mismatches
    finally:
        del ds
        unset_hf_deepspeed_config()  # the object registers itself globally (ZeRO-3 detection)


@pytest.mark.parametrize("recipe", sorted(TRAINING_ARGS))
def test_recipe_model_data_and_mod_settings_match_the_official_table(recipe, tokenizer):
    from gamma_mod.model.builder import load_model_spec
    from gamma_mod.train.train import build_model

    shipped = load_config(TrainConfig, RECIPES / f"{recipe}.yaml")
    other = OTHER[recipe]
    assert shipped.data.template == other["template"]
    assert shipped.data.max_length == other["max_length"]
    assert shipped.optim.group_by_modality_length == other["group_by_modality_length"]
    assert shipped.model.attn_implementation == other["attn_implementation"]
    spec = load_model_spec(SPEC[recipe])
    flat = {**spec.get("tower", {}), **spec.get("projector", {})}
    assert shipped.model.init or shipped.model.spec == SPEC[recipe]
    for key, value in SPEC_VALUES[SPEC[recipe]].items():
        assert flat[key] == value, key
    if recipe in MOD:
        assert shipped.mod.resolve_layers(32) == MOD[recipe]["layers"]  # 28 of 32
        assert shipped.mod.resolve_layers(40) == MOD_13B_LAYERS  # the same rule on 13B: 36 of 40
        assert shipped.mod.skip_ratio == MOD[recipe]["skip_ratio"]
        assert shipped.mod.router_aux_loss_coef == MOD[recipe]["aux"]
    else:
        assert shipped.mod is None  # stage 1 is dense

    # The model config the tiny twin is built with carries the recipe's image settings.
    cfg = load_config(TrainConfig, RECIPES / f"{recipe}.yaml", twin_overrides(recipe) + ["optim.bf16=false"])
    model = build_model(cfg, tokenizer)
    for key in ("input_image_size", "image_aspect_ratio", "image_size_aux", "image_grid", "image_global"):
        if key in other:
            assert getattr(model.config, key) == other[key], key


@pytest.mark.parametrize("recipe", sorted(TRAINING_ARGS))
def test_recipe_trainable_parameters_match_the_official_rule(recipe, tokenizer):
    from gamma_mod.train.trainable import set_trainable
    from gamma_mod.train.train import build_model

    cfg = load_config(TrainConfig, RECIPES / f"{recipe}.yaml", twin_overrides(recipe) + ["optim.bf16=false"])
    model = build_model(cfg, tokenizer)
    names = [n for n, _ in model.named_parameters()]
    trainable = set_trainable(model, cfg.trainable_groups())
    assert set(trainable) == expected_trainable(recipe, names)
    assert set(trainable) == {n for n, p in model.named_parameters() if p.requires_grad}
    if recipe in MOD:
        assert model.config.mod_config().mod_layers_idx == [1, 2]
        assert "model.layers.1.router.weight" in trainable
    spot = {  # a few names spelled out, so a rule that drifted with the code would still be caught
        "llava_hr_7b_stage1": {"model.mm_projector.0.weight": True, "model.vision_tower.align_stages.0.fast_proj.weight": True,
                               "model.vision_tower.align_stages_latent.0.slow_proj.weight": False,
                               "model.layers.0.self_attn.q_proj.weight": False, "lm_head.weight": False},
        "llava_hr_7b_stage2_mod": {
            "model.vision_tower.fast_vision_tower.vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight": True,
            "model.vision_tower.slow_vision_tower.vision_tower.embeddings.patch_embeddings.weight": True,
            "model.vision_tower.align_stages_latent.0.gate.0.weight": True, "model.embed_tokens.weight": True},
        "mgm_hd_7b_stage2_mod": {"model.vision_tower.vlm_uni_query_projector.1.weight": True,
                                 "model.vision_tower.vision_tower.vision_model.embeddings.patch_embedding.weight": False,
                                 "model.vision_tower.vision_tower_aux.embeddings.patch_embeddings.weight": False,
                                 "lm_head.weight": True},
    }[recipe]
    for name, on in spot.items():
        assert (name in trainable) == on, name


def test_trainable_default_is_unchanged_and_bad_groups_are_errors(tmp_path):
    from gamma_mod.config import ConfigError, build
    from gamma_mod.model.builder import build_model
    from gamma_mod.train.trainable import set_trainable

    base = {"data": {"train_json": "x.json"}}
    assert build(TrainConfig, {**base, "stage": "pretrain"}).trainable_groups() == ["mm_projector"]
    assert build(TrainConfig, base).trainable_groups() == ["mm_projector", "llm"]
    with pytest.raises(ConfigError, match=r"unknown groups \['vision'\]"):
        build(TrainConfig, {**base, "trainable": ["vision"]})
    with pytest.raises(ConfigError, match="with lora.enable"):
        build(TrainConfig, {**base, "trainable": ["llm", "clip"], "lora": {"enable": True}})
    model = build_model("llava_v1_5_tiny", vocab_size=64, image_token_index=5, pad_token_id=0, bos_token_id=1,
                        eos_token_id=2)
    with pytest.raises(ValueError, match="'convnext' does not exist in a 'clip' model"):
        set_trainable(model, ["convnext"])


# -- refusing to train a real-size model from random weights ----------------------------------------------
@pytest.mark.parametrize("recipe,missing", [
    ("llava_hr_7b_stage1", ["model.llm", "model.clip", "model.convnext"]),
    ("mgm_hd_7b_stage2_mod", ["model.llm", "model.clip", "model.convnext", "model.mm_adapter"]),
])
def test_real_size_recipe_without_components_is_a_clear_error(recipe, missing, tmp_path):
    from gamma_mod.train.train import check_pretrained_components, run_training

    out = tmp_path / "run"
    cfg = load_config(TrainConfig, RECIPES / f"{recipe}.yaml", [f"output_dir={out}"])
    with pytest.raises(ValueError) as error:
        run_training(cfg)
    message = str(error.value)
    assert "real-size model" in message and "allow_random_init" in message
    assert f"{', '.join(missing)} are not set" in message
    assert not out.exists()  # refused before anything was written
    # Partially given: only the rest is named.
    cfg = load_config(TrainConfig, RECIPES / f"{recipe}.yaml", [f"output_dir={out}", "model.llm=/models/vicuna"])
    with pytest.raises(ValueError, match=f"{', '.join(missing[1:])} are not set"):
        check_pretrained_components(cfg)
    # On purpose: allowed.
    check_pretrained_components(load_config(TrainConfig, RECIPES / f"{recipe}.yaml", ["model.allow_random_init=true"]))


def test_stage2_recipe_from_a_trained_folder_and_tiny_specs_need_no_components():
    from gamma_mod.train.train import check_pretrained_components

    check_pretrained_components(load_config(TrainConfig, RECIPES / "llava_hr_7b_stage2_mod.yaml"))  # model.init
    check_pretrained_components(load_config(TrainConfig, RECIPES / "stage1_tiny.yaml"))
    check_pretrained_components(load_config(TrainConfig, RECIPES / "llava_hr_7b_stage1.yaml",
                                            ["model.spec=llava_hr_tiny"]))


def test_mod_section_checks_a_converted_init(tmp_path, tokenizer):
    """A converted `model.init` must match the recipe's mod section; a mismatch is an error, never ignored."""
    from gamma_mod.data.tokenizer import model_token_ids
    from gamma_mod.mod.convert import convert_to_mod
    from gamma_mod.model.builder import build_model as build_spec
    from gamma_mod.train.train import build_model

    model = build_spec("llava_hr_tiny", **model_token_ids(tokenizer))
    convert_to_mod(model, [1, 2], skip_ratio=0.5)
    model.save_pretrained(tmp_path / "mod")
    recipe = RECIPES / "llava_hr_7b_stage2_mod.yaml"
    base = [f"model.init={tmp_path / 'mod'}", "optim.bf16=false"]
    ok = load_config(TrainConfig, recipe, base + ["mod.dense_layers=[0,-1]"])
    assert build_model(ok, tokenizer).config.mod_config().mod_layers_idx == [1, 2]
    with pytest.raises(ValueError, match=r"layers: model \[1, 2\] vs mod section \[1\]"):
        build_model(load_config(TrainConfig, recipe, base + ["mod.dense_layers=[0,2,-1]"]), tokenizer)
    with pytest.raises(ValueError, match="skip_ratio: model 0.5 vs mod section 0.34"):
        build_model(load_config(TrainConfig, recipe, base + ["mod.dense_layers=null", "mod.skip_ratio=0.34"]),
                    tokenizer)


# -- the launch scripts --------------------------------------------------------------------------------
def run_finetune_script(tmp_path, config: str, arank: Path | None, layers: int = 32) -> list[str]:
    """Run scripts/v1_5/finetune_mod.sh with a PYTHON that records its arguments instead of running."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    log = tmp_path / "calls.txt"
    fake = tmp_path / "python"
    fake.write_text(f'#!/usr/bin/env bash\necho "$*" >> {log}\n')
    fake.chmod(0o755)
    stage1 = tmp_path / "stage1"
    stage1.mkdir(exist_ok=True)
    (stage1 / "config.json").write_text(f'{{"model_type": "llava_llama", "num_hidden_layers": {layers}}}')
    env = {**os.environ, "PYTHON": str(fake), "CONFIG": config, "STAGE1": str(stage1),
           "MOD_MODEL": str(tmp_path / "mod"), "OUTPUT_DIR": str(tmp_path / "out"), "ARANK": str(arank or "")}
    subprocess.run(["bash", str(ROOT / "scripts/v1_5/finetune_mod.sh")], env=env, check=True, capture_output=True)
    return log.read_text().splitlines()


def test_finetune_script_uses_the_official_layer_budget(tmp_path):
    real = str(RECIPES / "llava_hr_7b_stage2_mod.yaml")
    convert, train = run_finetune_script(tmp_path / "a", real, None)
    assert f"--layers {','.join(map(str, range(3, 31)))}" in convert  # arank_mod: 28 of 32
    assert "mod.dense_layers=null" not in train and "mod.skip_ratio=0.5" in train
    arank = tmp_path / "arank.json"
    arank.write_text("{}")
    convert, train = run_finetune_script(tmp_path / "b", real, arank)
    assert f"--arank {arank} --k-dense 4" in convert  # the official budget, not 2
    assert "mod.dense_layers=null" in train
    convert, _ = run_finetune_script(tmp_path / "c", str(RECIPES / "stage2_tiny.yaml"), arank, layers=6)
    assert f"--arank {arank} --k-dense 2" in convert  # the tiny default keeps its scaled budget
    convert, _ = run_finetune_script(tmp_path / "d", real, None, layers=40)
    assert f"--layers {','.join(map(str, MOD_13B_LAYERS))}" in convert  # 13B: 36 of 40


def test_every_shipped_recipe_round_trips_through_the_loader(tmp_path):
    for path in sorted(RECIPES.glob("*.yaml")):
        cfg = load_config(TrainConfig, path)
        again = tmp_path / path.name
        again.write_text(yaml.safe_dump(dataclasses.asdict(cfg)))
        assert load_config(TrainConfig, again) == cfg, path.name


def test_square_aspect_is_clip_resize_and_centre_crop():
    """image_aspect_ratio 'square' (the official default): shortest side -> S, centre crop, as
    CLIPImageProcessor(size=S, crop_size=S) does; 'pad' letterboxes first."""
    from PIL import Image

    from gamma_mod.model.vision import ImageProcessor

    image = Image.new("RGB", (40, 20), (0, 0, 0))
    image.paste((255, 255, 255), (6, 0, 34, 20))  # white but for 6 px at each side
    square = ImageProcessor(10, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), aspect_ratio="square")(image)
    assert torch.allclose(square, torch.ones(3, 10, 10), atol=0.02)  # 40x20 -> 20x10, centre 10x10: white
    pad = ImageProcessor(10, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), aspect_ratio="pad")(image)
    assert pad[:, 0].abs().max() < 0.02 and pad[:, 5, 5].min() > 0.9  # letterbox rows, white centre
