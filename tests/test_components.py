"""Pretrained components from local folders: HF Llama, HF CLIP, timm / open_clip ConvNeXt, stage-1 adapter.

Tiny sources are built here with transformers' own classes (`save_pretrained`) or written in the
timm / open_clip / official key layout by renaming rules written in this file, independently of the
loader's tables. Every loaded tensor is compared with its source.
"""

import json
import re
from pathlib import Path

import pytest
import torch
from transformers import CLIPConfig, CLIPModel, CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

from gamma_mod.model.builder import build_pretrained_model, load_model_spec
from gamma_mod.model.components import ComponentError, load_components
from gamma_mod.model.vision.convnext import build_convnext

ROOT = Path(__file__).resolve().parents[1]
TOKENS = dict(vocab_size=66, image_token_index=5, pad_token_id=0, bos_token_id=1, eos_token_id=2)
SOURCE_VOCAB = 65  # the Llama checkpoint's vocabulary; ours adds <image>


def llama_folder(path, spec="llava_hr_tiny", **changes):
    text = {**load_model_spec(spec)["text"], **changes}
    torch.manual_seed(1)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=SOURCE_VOCAB, bos_token_id=1, eos_token_id=2, **text))
    model.save_pretrained(path, max_shard_size="20KB")  # several safetensors shards + index
    return {k: v.clone() for k, v in model.state_dict().items()}


def clip_folder(path, spec="llava_hr_tiny", vision_only=False, **changes):
    vision = {**load_model_spec(spec)["vision"], **changes}
    torch.manual_seed(2)
    if vision_only:  # transformers 5 CLIPVisionModel: keys without the `vision_model.` level
        model = CLIPVisionModel(CLIPVisionConfig(**vision))
        model.save_pretrained(path)
        return {f"vision_model.{k}": v.clone() for k, v in model.state_dict().items()}
    text = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, vocab_size=40,
                bos_token_id=1, eos_token_id=2, pad_token_id=0)
    model = CLIPModel(CLIPConfig(vision_config=vision, text_config=text, projection_dim=8))
    model.save_pretrained(path)
    return {k: v.clone() for k, v in model.state_dict().items()}


def timm_key(key: str) -> str:
    """transformers ConvNext trunk key -> timm ConvNeXt key (timm/convnext_large_mlp, open_clip trunk)."""
    key = key.replace("embeddings.patch_embeddings.", "stem.0.").replace("embeddings.layernorm.", "stem.1.")
    key = re.sub(r"encoder\.stages\.(\d+)\.downsampling_layer\.", r"stages.\1.downsample.", key)
    key = re.sub(r"encoder\.stages\.(\d+)\.layers\.(\d+)\.", r"stages.\1.blocks.\2.", key)
    for ours, theirs in (("dwconv", "conv_dw"), ("layernorm", "norm"), ("pwconv1", "mlp.fc1"), ("pwconv2", "mlp.fc2")):
        key = key.replace(f".{ours}.", f".{theirs}.")
    return key.replace("layer_scale_parameter", "gamma")


def convnext_trunk(spec="llava_hr_tiny"):
    torch.manual_seed(3)
    trunk = build_convnext(load_model_spec(spec)["tower"]["vision_config_hr"])
    with torch.no_grad():
        for p in trunk.parameters():
            p.add_(torch.randn_like(p))  # nothing at its init value
    return {timm_key(k): v.clone() for k, v in trunk.state_dict().items()}, trunk.state_dict()


def timm_file(path, spec="llava_hr_tiny"):
    """timm's convnext_large_mlp layout: trunk at the top level + its CLIP classifier head."""
    state, ours = convnext_trunk(spec)
    width = load_model_spec(spec)["tower"]["vision_config_hr"]["hidden_sizes"][-1]
    state.update({"head.norm.weight": torch.ones(width), "head.norm.bias": torch.zeros(width),
                  "head.pre_logits.fc.weight": torch.randn(width, width), "head.pre_logits.fc.bias": torch.zeros(width),
                  "head.fc.weight": torch.randn(12, width), "head.fc.bias": torch.zeros(12)})
    torch.save(state, path)
    return ours


def open_clip_folder(path, spec="mgm_hd_tiny"):
    """open_clip's convnext_large_d_320 layout: trunk under visual.trunk., MLP head, text tower."""
    trunk, ours = convnext_trunk(spec)
    width = load_model_spec(spec)["tower"]["vision_config_hr"]["hidden_sizes"][-1]
    state = {f"visual.trunk.{k}": v for k, v in trunk.items()}
    state.update({"visual.trunk.head.norm.weight": torch.ones(width), "visual.trunk.head.norm.bias": torch.zeros(width),
                  "visual.head.mlp.fc1.weight": torch.randn(16, width), "visual.head.mlp.fc2.weight": torch.randn(8, 16),
                  "token_embedding.weight": torch.randn(40, 8), "positional_embedding": torch.randn(7, 8),
                  "transformer.resblocks.0.attn.in_proj_weight": torch.randn(24, 8), "ln_final.weight": torch.ones(8),
                  "text_projection": torch.randn(8, 8), "logit_scale": torch.tensor(4.6)})
    path.mkdir()
    torch.save(state, path / "open_clip_pytorch_model.bin")
    (path / "open_clip_config.json").write_text(json.dumps({"model_cfg": {"vision_cfg": {"timm_model_name": "convnext_large"}}}))
    return ours


def check_llm(model, source):
    state = model.state_dict()
    for key, value in source.items():
        if value.shape[0] == SOURCE_VOCAB and key in ("model.embed_tokens.weight", "lm_head.weight"):
            assert torch.equal(state[key][:SOURCE_VOCAB], value), key
            assert torch.allclose(state[key][SOURCE_VOCAB], value.mean(0)), key  # LLaVA's resize rule
        else:
            assert torch.equal(state[key], value), key


def check_clip(model, source, prefix):
    state = model.state_dict()
    vision = {k[len("vision_model."):]: v for k, v in source.items() if k.startswith("vision_model.")}
    vision.pop("embeddings.position_ids", None)
    assert vision
    for key, value in vision.items():
        assert torch.equal(state[prefix + key], value), key


def check_convnext(model, trunk, prefix):
    state = model.state_dict()
    assert trunk
    for key, value in trunk.items():
        assert torch.equal(state[prefix + key], value), key


def test_llava_hr_from_llama_clip_and_timm_convnext(tmp_path):
    llm = llama_folder(tmp_path / "vicuna")
    clip = clip_folder(tmp_path / "clip")
    trunk = timm_file(tmp_path / "convnext_large_mlp.bin")
    assert len(list((tmp_path / "vicuna").glob("*.safetensors"))) > 1  # the sharded path is exercised
    model = build_pretrained_model("llava_hr_tiny", {"llm": str(tmp_path / "vicuna"), "clip": str(tmp_path / "clip"),
                                                     "convnext": str(tmp_path / "convnext_large_mlp.bin")}, **TOKENS)
    check_llm(model, llm)
    check_clip(model, clip, "model.vision_tower.fast_vision_tower.vision_tower.vision_model.")
    check_convnext(model, trunk, "model.vision_tower.slow_vision_tower.vision_tower.")
    # The MR-Adapters keep their own init: zero output projections, so a fresh adapter is the identity.
    assert model.model.vision_tower.align_stages_latent[0].slow_proj.weight.abs().sum() == 0


def test_mgm_from_open_clip_convnext_and_the_stage1_adapter(tmp_path):
    llm = llama_folder(tmp_path / "vicuna", "mgm_hd_tiny")
    clip = clip_folder(tmp_path / "clip", "mgm_hd_tiny", vision_only=True)
    trunk = open_clip_folder(tmp_path / "openclip-convnext-large-d-320", "mgm_hd_tiny")
    # The official stage-1 mm_projector.bin of Mini-Gemini: projector + model.vlm_uni_* (mgm_arch.py names).
    torch.manual_seed(4)
    reference = build_pretrained_model("mgm_hd_tiny", {}, **TOKENS)
    adapter = {}
    for key, value in reference.state_dict().items():
        if key.startswith("model.mm_projector."):
            adapter[key] = torch.randn_like(value)
        elif key.startswith("model.vision_tower.vlm_uni_"):
            adapter[key.replace("model.vision_tower.", "model.", 1)] = torch.randn_like(value)
    torch.save(adapter, tmp_path / "mm_projector.bin")
    model = build_pretrained_model("mgm_hd_tiny", {
        "llm": str(tmp_path / "vicuna"), "clip": str(tmp_path / "clip"),
        "convnext": str(tmp_path / "openclip-convnext-large-d-320"), "mm_adapter": str(tmp_path / "mm_projector.bin")},
        **TOKENS)
    check_llm(model, llm)
    check_clip(model, clip, "model.vision_tower.vision_tower.vision_model.")
    check_convnext(model, trunk, "model.vision_tower.vision_tower_aux.")
    state = model.state_dict()
    for key, value in adapter.items():
        ours = key if key.startswith("model.mm_projector.") else key.replace("model.", "model.vision_tower.", 1)
        assert torch.equal(state[ours], value), key


def test_llava_hr_stage1_adapter_holds_projector_and_fusion(tmp_path):
    model = build_pretrained_model("llava_hr_tiny", {}, **TOKENS)
    adapter = {k: torch.randn_like(v) for k, v in model.state_dict().items()
               if k.startswith(("model.mm_projector.", "model.vision_tower.align_stages."))}
    assert any(".align_stages.0." in k for k in adapter) and not any("align_stages_latent" in k for k in adapter)
    torch.save(adapter, tmp_path / "mm_projector.bin")
    load_components(model, {"mm_adapter": str(tmp_path / "mm_projector.bin")})
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in adapter.items())
    del adapter["model.mm_projector.0.bias"]
    torch.save(adapter, tmp_path / "partial.bin")
    with pytest.raises(ComponentError, match=r"1 of our parameters not in the checkpoint: \['model.mm_projector.0.bias'\]"):
        load_components(model, {"mm_adapter": str(tmp_path / "partial.bin")})


def test_mismatched_components_are_errors_naming_what_differs(tmp_path):
    llama_folder(tmp_path / "deep", num_hidden_layers=3)
    with pytest.raises(ComponentError, match=r"model.llm .*deep is a different architecture.*num_hidden_layers: 3 "
                                             r"\(checkpoint\) vs 4 \(ours\)"):
        build_pretrained_model("llava_hr_tiny", {"llm": str(tmp_path / "deep")}, **TOKENS)
    clip_folder(tmp_path / "clip", patch_size=4)
    with pytest.raises(ComponentError, match=r"patch_size: 4 \(checkpoint\) vs 8 \(ours\)"):
        build_pretrained_model("llava_hr_tiny", {"clip": str(tmp_path / "clip")}, **TOKENS)
    # A ConvNeXt with an extra block: a tensor with no place is named.
    trunk, _ = convnext_trunk()
    extra = {**trunk, **{k.replace("blocks.0.", "blocks.9."): v for k, v in trunk.items() if "stages.0.blocks.0." in k}}
    torch.save(extra, tmp_path / "extra.bin")
    with pytest.raises(ComponentError, match=r"tensors with no place in our model: \['stages.0.blocks.9"):
        build_pretrained_model("llava_hr_tiny", {"convnext": str(tmp_path / "extra.bin")}, **TOKENS)
    # A missing stage is named as unfilled parameters.
    torch.save({k: v for k, v in trunk.items() if not k.startswith("stages.3.")}, tmp_path / "short.bin")
    with pytest.raises(ComponentError, match=r"of our parameters not in the checkpoint: \['model.vision_tower.slow_vision"):
        build_pretrained_model("llava_hr_tiny", {"convnext": str(tmp_path / "short.bin")}, **TOKENS)
    with pytest.raises(ComponentError, match="a 'clip' model has no ConvNeXt tower"):
        build_pretrained_model("llava_v1_5_tiny", {"convnext": str(tmp_path / "short.bin")}, **TOKENS)
    with pytest.raises(ComponentError, match="no such file or folder"):
        build_pretrained_model("llava_hr_tiny", {"convnext": str(tmp_path / "nowhere")}, **TOKENS)


def test_training_from_components_keeps_frozen_parts_and_trains_the_official_stage1_set(tmp_path):
    """LLaVA-HR stage 1 from pretrained parts: the LLM, CLIP and ConvNeXt leave training unchanged;
    the projector and the MR fusion (align_stages) learn."""
    from gamma_mod.data.synthetic import write_synthetic_dataset
    from gamma_mod.data.tokenizer import load_tokenizer
    from gamma_mod.model import LlavaLlamaForCausalLM
    from gamma_mod.config import build
    from gamma_mod.train.args import TrainConfig
    from gamma_mod.train.train import run_training

    data = write_synthetic_dataset(tmp_path / "data", n_captions=8, n_vqa_train=1, n_vqa_test=1, image_size=32, seed=1)
    global SOURCE_VOCAB
    vocab = len(load_tokenizer(str(data.tokenizer)))
    previous, SOURCE_VOCAB = SOURCE_VOCAB, vocab - 1
    try:
        llm = llama_folder(tmp_path / "vicuna")
    finally:
        SOURCE_VOCAB = previous
    clip = clip_folder(tmp_path / "clip")
    trunk = timm_file(tmp_path / "convnext.bin")
    cfg = build(TrainConfig, {
        "stage": "pretrain", "output_dir": str(tmp_path / "s1"), "trainable": ["mm_projector", "align_stages"],
        "model": {"spec": "llava_hr_tiny", "tokenizer": str(data.tokenizer), "llm": str(tmp_path / "vicuna"),
                  "clip": str(tmp_path / "clip"), "convnext": str(tmp_path / "convnext.bin"),
                  "image": {"input_image_size": 64, "image_aspect_ratio": "square"}},
        "data": {"train_json": str(data.stage1), "image_folder": str(data.images), "template": "plain", "max_length": 128},
        "optim": {"lr": 1e-2, "batch_size": 4, "max_steps": 2, "warmup_ratio": 0.0, "seed": 0},
    })
    trained = LlavaLlamaForCausalLM.from_pretrained(run_training(cfg))
    assert trained.config.input_image_size == 64 and trained.config.image_aspect_ratio == "square"
    state = trained.state_dict()
    for key, value in llm.items():  # frozen: still exactly the pretrained LLM (+ the mean row)
        assert torch.equal(state[key][: value.shape[0]], value), key
    check_clip(trained, clip, "model.vision_tower.fast_vision_tower.vision_tower.vision_model.")
    check_convnext(trained, trunk, "model.vision_tower.slow_vision_tower.vision_tower.")
    # The initial model, rebuilt as the run built it (same seed, same order of random draws).
    from transformers import set_seed

    from gamma_mod.data.tokenizer import model_token_ids

    set_seed(0)
    initial = build_pretrained_model("llava_hr_tiny", cfg.model.components(), image=cfg.model.image.overrides(),
                                     **model_token_ids(load_tokenizer(str(data.tokenizer)))).state_dict()
    changed = {k for k in initial if not torch.equal(initial[k], state[k])}
    assert changed and all(k.startswith(("model.mm_projector.", "model.vision_tower.align_stages.")) for k in changed)
    assert {k.split(".")[1] if k.startswith("model.mm") else "align_stages" for k in changed} == {"mm_projector",
                                                                                                  "align_stages"}


@pytest.mark.slow
def test_components_and_inline_mod_under_two_process_zero3(tmp_path):
    """The MGM-HD recipe's path at micro size: a model built from its spec + pretrained parts, converted to
    MoD inside the job, trained under ZeRO-3 on 2 gloo processes with the modality-grouped sampler."""
    import os
    import subprocess
    import sys

    import yaml

    from conftest import MICRO_SPEC
    from gamma_mod.data.synthetic import write_synthetic_dataset
    from gamma_mod.data.tokenizer import load_tokenizer
    from gamma_mod.model import LlavaLlamaForCausalLM

    root = tmp_path
    data = write_synthetic_dataset(root / "data", n_captions=8, n_vqa_train=3, n_vqa_test=1, image_size=32, seed=2)
    records = json.loads(data.stage2_train.read_text())[:8]
    data.stage2_train.write_text(json.dumps(records))
    (root / "micro.yaml").write_text(yaml.safe_dump(MICRO_SPEC))
    vocab = len(load_tokenizer(str(data.tokenizer)))
    torch.manual_seed(5)
    source = LlamaForCausalLM(LlamaConfig(vocab_size=vocab - 1, **MICRO_SPEC["text"]))
    source.save_pretrained(root / "llm")
    CLIPVisionModel(CLIPVisionConfig(**MICRO_SPEC["vision"])).save_pretrained(root / "clip")
    out = root / "out"
    args = [str(ROOT / "configs/train/stage2_tiny.yaml"), f"output_dir={out}", "model.init=null",
            f"model.spec={root / 'micro.yaml'}", f"model.tokenizer={data.tokenizer}", f"model.llm={root / 'llm'}",
            f"model.clip={root / 'clip'}", "trainable=[mm_projector,llm,clip]", "mod={layers: [1], skip_ratio: 0.5}",
            f"data.train_json={data.stage2_train}", f"data.image_folder={data.images}", "optim.max_steps=3",
            "optim.batch_size=4", "optim.lr=0.0", "optim.warmup_ratio=0.0", "logging_steps=1",
            "optim.group_by_modality_length=true", f"deepspeed={ROOT / 'scripts/zero3.json'}", "optim.max_grad_norm=0.0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                           "29533", "-m", "gamma_mod.train.train", *args], capture_output=True, text=True, env=env,
                          cwd=root, timeout=900)
    assert "TRAINING COMPLETE step=3" in proc.stdout, (proc.stdout[-3000:], proc.stderr[-5000:])
    trained = LlavaLlamaForCausalLM.from_pretrained(out).state_dict()
    assert trained["model.layers.1.router.weight"].shape == (2, MICRO_SPEC["text"]["hidden_size"])
    # lr 0: the saved model is the loaded one; the pretrained LLM went through partitioning intact.
    for key, value in source.state_dict().items():
        assert torch.equal(trained[key][: value.shape[0]], value), key
