"""Training: stage freezing, MoD stage 2, guards, atomic checkpoints, exact resume."""

import json
import os
import subprocess
import sys

import pytest
import torch
import yaml

from gamma_mod.config import ConfigError, load_config
from gamma_mod.data.synthetic import write_synthetic_dataset

from conftest import MICRO_SPEC
from gamma_mod.train import checkpoint
from gamma_mod.train.args import TrainConfig
from gamma_mod.train.train import run_training
from gamma_mod.train.trainer import TrainingDivergedError



@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    return write_synthetic_dataset(root, n_captions=24, n_vqa_train=8, n_vqa_test=2, image_size=32, seed=1)


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    path = tmp_path_factory.mktemp("spec") / "micro.yaml"
    path.write_text(yaml.safe_dump(MICRO_SPEC))
    return str(path)


def config(data, spec, out, stage="pretrain", **extra):
    raw = {
        "stage": stage, "output_dir": str(out),
        "model": {"spec": spec, "tokenizer": str(data.tokenizer)},
        "data": {"train_json": str(data.stage1 if stage == "pretrain" else data.stage2_train),
                 "image_folder": str(data.images), "template": "plain" if stage == "pretrain" else "vicuna_v1",
                 "max_length": 128},
        "optim": {"lr": 1e-3, "batch_size": 4, "max_steps": 6, "seed": 0, "warmup_ratio": 0.0},
        "logging_steps": 1,
    }
    for key, value in extra.items():
        node = raw
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return _build(raw)


def _build(raw):
    from gamma_mod.config import build

    return build(TrainConfig, raw)


def losses(out):
    history = json.loads((out / "complete.json").read_text())["log_history"]
    return [h["loss"] for h in history if "loss" in h]


def test_config_overrides_and_unknown_keys(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"data": {"train_json": "x.json"}, "optim": {"lr": 0.1}}))
    cfg = load_config(TrainConfig, path, ["optim.lr=3e-4", "optim.batch_size=2", "mod.layers=[1,2]"])
    assert cfg.optim.lr == 3e-4 and cfg.optim.batch_size == 2 and cfg.mod.layers == [1, 2]
    with pytest.raises(ConfigError, match="unknown keys \\['lrr'\\]"):
        load_config(TrainConfig, path, ["optim.lrr=1"])
    with pytest.raises(ConfigError, match="stage must be one of"):
        load_config(TrainConfig, path, ["stage=sft"])


def test_stage1_trains_only_the_projector(data, spec, tmp_path):
    from gamma_mod.model import LlavaLlamaForCausalLM

    out = run_training(config(data, spec, tmp_path / "s1"))
    trained = LlavaLlamaForCausalLM.from_pretrained(out)
    torch.manual_seed(0)  # same init as the run (seed 0, built the same way)
    from gamma_mod.data.tokenizer import load_tokenizer, model_token_ids
    from gamma_mod.model.builder import build_model
    from transformers import set_seed

    set_seed(0)
    initial = build_model(spec, **model_token_ids(load_tokenizer(str(data.tokenizer))))
    before, after = initial.state_dict(), trained.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("model.mm_projector.") for k in changed), sorted(changed)[:5]


def test_stage2_mod_runs_and_learns(data, spec, tmp_path):
    s1 = run_training(config(data, spec, tmp_path / "s1"))
    out = run_training(config(data, spec, tmp_path / "s2", stage="finetune", **{
        "model.init": str(s1), "model.tokenizer": str(s1), "mod": {"layers": [1], "skip_ratio": 0.5},
        "optim.max_steps": 12, "optim.lr": 3e-3}))
    values = losses(out)
    assert values[-1] < values[0]
    history = json.loads((out / "complete.json").read_text())["log_history"]
    assert any("routing_loss" in h and "mod/skip/layer_01" in h for h in history)
    assert json.loads((out / "config.json").read_text())["mod"]["mod_layers_idx"] == [1]


def test_nan_loss_stops_with_step(data, spec, tmp_path, monkeypatch):
    from gamma_mod.model import LlavaLlamaForCausalLM

    original = LlavaLlamaForCausalLM.forward
    calls = {"n": 0}

    def poisoned(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 3 and out.loss is not None:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(LlavaLlamaForCausalLM, "forward", poisoned)
    with pytest.raises(TrainingDivergedError, match=r"non-finite loss nan at step 3 \(samples cap-"):
        run_training(config(data, spec, tmp_path / "nan"))


def test_resume_after_interruption_matches_uninterrupted(data, spec, tmp_path):
    full = run_training(config(data, spec, tmp_path / "full", save_steps=3))
    partial_out = tmp_path / "partial"
    run_training(config(data, spec, partial_out, save_steps=3, **{"optim.max_steps": 6}))
    # Simulate a kill right after step 3: drop everything past the step-3 checkpoint.
    import shutil

    shutil.rmtree(partial_out / "checkpoint-6")
    for name in ("complete.json", "model.safetensors"):
        (partial_out / name).unlink()
    resumed = run_training(config(data, spec, partial_out, save_steps=3, resume=True))
    assert losses(resumed)[-1] == losses(full)[-1]
    assert losses(resumed)[-3:] == losses(full)[-3:]


def test_kill_during_save_leaves_previous_checkpoint(data, spec, tmp_path):
    """A training process killed while writing checkpoint-4 leaves checkpoint-2 complete and loadable."""
    out = tmp_path / "killed"
    cfg_path = tmp_path / "cfg.yaml"
    import dataclasses

    cfg = config(data, spec, out, save_steps=2, **{"optim.max_steps": 4})
    cfg_path.write_text(yaml.safe_dump(dataclasses.asdict(cfg)))
    script = (
        "import os, sys\n"
        "from gamma_mod.model import LlavaLlamaForCausalLM\n"
        "original = LlavaLlamaForCausalLM.save_pretrained\n"
        "def dying(self, path, *a, **k):\n"
        "    original(self, path, *a, **k)\n"
        "    if path.endswith('checkpoint-4'):\n"
        "        os._exit(9)  # killed mid-checkpoint: model written, optimizer/state not yet\n"
        "LlavaLlamaForCausalLM.save_pretrained = dying\n"
        "from gamma_mod.train.train import main\n"
        f"main([{str(cfg_path)!r}])\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env={**os.environ})
    assert proc.returncode == 9, proc.stderr[-2000:]
    assert [p.name for p in checkpoint.complete_checkpoints(out)] == ["checkpoint-2"]
    assert not (out / "checkpoint-4").exists()
    from gamma_mod.model import LlavaLlamaForCausalLM

    LlavaLlamaForCausalLM.from_pretrained(out / "checkpoint-2")
    resumed = run_training(_build({**dataclasses.asdict(cfg), "resume": True}))
    assert json.loads((resumed / "complete.json").read_text())["global_step"] == 4


def test_lora_finetune_merges_into_a_plain_checkpoint(data, spec, tmp_path):
    from gamma_mod.model import LlavaLlamaForCausalLM

    s1 = run_training(config(data, spec, tmp_path / "s1", **{"optim.max_steps": 2}))
    out = run_training(config(data, spec, tmp_path / "lora", stage="finetune", **{
        "model.init": str(s1), "model.tokenizer": str(s1), "lora": {"enable": True, "r": 4, "alpha": 8},
        "optim.max_steps": 3}))
    merged = LlavaLlamaForCausalLM.from_pretrained(out)
    assert not any("lora" in k for k in merged.state_dict())
    base = LlavaLlamaForCausalLM.from_pretrained(s1).state_dict()
    after = merged.state_dict()
    assert not torch.equal(base["model.layers.0.self_attn.q_proj.weight"], after["model.layers.0.self_attn.q_proj.weight"])
