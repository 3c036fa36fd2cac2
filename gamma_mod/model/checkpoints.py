"""Load released LLaVA-HR / Mini-Gemini / gamma-MoD checkpoint folders into our model.

A folder holds config.json (official fields, `model_type` llava_llama / mod_llava_llama / mgm /
mod_mgm) and weights: `pytorch_model.bin` or shards `pytorch_model-*.bin` + `pytorch_model.bin.index.json`
(read with `torch.load(weights_only=True)`: tensors only, never arbitrary pickles), or the
safetensors equivalents. What is loaded depends only on config.json and the weights, never on the
folder's name.

Official names equal ours except:
  * ConvNeXt trunks use timm / open_clip names; ours are transformers' ConvNext. The explicit tables
    below (`timm_convnext_table`) give every source key its target.
  * Mini-Gemini keeps its high-resolution tower and patch-info-mining projections on the model
    (`model.vision_tower_aux.*`, `model.vlm_uni_*`); ours live inside `model.vision_tower`.
  * Keys dropped on purpose, each with its reason (`DROPPED`): the timm classifier head, buffers
    older transformers versions saved.
Every source key must be consumed and every parameter of ours filled with the right shape; anything
else is an error listing the keys.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch

from .configuration import LlavaLlamaConfig, ModLlavaLlamaConfig, ModMGMConfig
from .llava_llama import ROUTER_KEY_SUFFIX, LlavaLlamaForCausalLM, ModLlavaLlamaForCausalLM


def key_problems(groups: list[tuple[str, list[str]]], limit: int) -> list[str]:
    """One line per non-empty group of bad keys (`N label: [first `limit`]`), for a strict load's error."""
    return [f"{len(items)} {label}: {items[:limit]}" for label, items in groups if items]


class ModMGMForCausalLM(LlavaLlamaForCausalLM):
    """Entry for configs with `model_type: mod_mgm` (gamma-MoD on Mini-Gemini)."""

    config_class = ModMGMConfig


# model_type -> our config class. Plain Mini-Gemini ("mgm") reads with the base class: the
# `mm_vision_tower_aux` field selects the Mini-Gemini tower.
CONFIG_CLASSES = {
    "llava_llama": LlavaLlamaConfig,
    "llava": LlavaLlamaConfig,
    "mgm": LlavaLlamaConfig,
    "mod_llava_llama": ModLlavaLlamaConfig,
    "mod_mgm": ModMGMConfig,
}

# Source keys never loaded, with the reason. Anything not in a table, not dropped here and not one of
# our own keys is an error.
DROPPED = {
    r"\.embeddings\.position_ids$": "CLIP position ids: a buffer transformers < 4.31 saved; recomputed",
    r"\.self_attn\.rotary_emb\.inv_freq$": "RoPE frequencies: a buffer older transformers saved; recomputed",
}
TIMM_HEAD = ("head.norm.weight", "head.norm.bias", "head.pre_logits.fc.weight", "head.pre_logits.fc.bias",
             "head.fc.weight", "head.fc.bias")


# -- key tables ---------------------------------------------------------------------------------------
def timm_convnext_table(depths: list[int], src: str, dst: str, *, stem: str = "stem", stages: str = "stages",
                        head: bool = False) -> dict[str, str | None]:
    """timm / open_clip ConvNeXt trunk names -> transformers ConvNext names, one entry per key.

    `src`/`dst` are the prefixes of the two trunks (ending in "."); `stem`/`stages` the names of the
    stem and stage containers (Mini-Gemini: `vision_stem` / `vision_stages`). The layer scale is
    `gamma` in timm and `weight` in LLaVA-HR's copy of it; both map to `layer_scale_parameter`.
    With `head`, the timm classifier head keys are listed as dropped (None): the towers use the trunk only.
    """
    table: dict[str, str | None] = {}
    for p in ("weight", "bias"):
        table[f"{src}{stem}.0.{p}"] = f"{dst}embeddings.patch_embeddings.{p}"
        table[f"{src}{stem}.1.{p}"] = f"{dst}embeddings.layernorm.{p}"
    for i, depth in enumerate(depths):
        s, d = f"{src}{stages}.{i}.", f"{dst}encoder.stages.{i}."
        if i > 0:  # stage 0 keeps the stem's resolution and width: no downsampling layer
            for k in ("0", "1"):
                for p in ("weight", "bias"):
                    table[f"{s}downsample.{k}.{p}"] = f"{d}downsampling_layer.{k}.{p}"
        for j in range(depth):
            sb, db = f"{s}blocks.{j}.", f"{d}layers.{j}."
            for ours, theirs in (("dwconv", "conv_dw"), ("layernorm", "norm"), ("pwconv1", "mlp.fc1"),
                                 ("pwconv2", "mlp.fc2")):
                for p in ("weight", "bias"):
                    table[f"{sb}{theirs}.{p}"] = f"{db}{ours}.{p}"
            table[f"{sb}gamma"] = f"{db}layer_scale_parameter"
            table[f"{sb}weight"] = f"{db}layer_scale_parameter"
    if head:
        for key in TIMM_HEAD:
            table[f"{src}{key}"] = None
    return table


def official_table(config: LlavaLlamaConfig) -> dict[str, str | None]:
    """The non-identity part of the official -> ours key map for this config's tower family."""
    kind = config.vision_tower_type
    if kind == "llava_hr":
        prefix = "model.vision_tower.slow_vision_tower.vision_tower."
        return timm_convnext_table(config.vision_config_hr["depths"], prefix, prefix, head=True)
    if kind == "mgm":
        table = timm_convnext_table(config.vision_config_hr["depths"], "model.vision_tower_aux.",
                                    "model.vision_tower.vision_tower_aux.", stem="vision_stem", stages="vision_stages")
        for name in ("query", "aux", "val"):
            for k in ("0", "1"):
                for p in ("weight", "bias"):
                    key = f"vlm_uni_{name}_projector.{k}.{p}"
                    table[f"model.{key}"] = f"model.vision_tower.{key}"
        return table
    return {}


def map_official_state_dict(config: LlavaLlamaConfig, source: dict[str, torch.Tensor],
                            ours: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename `source` (official layout) to our keys; raise on any key left over or left unfilled."""
    table = official_table(config)
    mapped: dict[str, torch.Tensor] = {}
    filled_from: dict[str, str] = {}
    unexpected, mismatched, duplicate = [], [], []
    for key, tensor in source.items():
        if key in table:
            target = table[key]
            if target is None:
                continue
        elif any(re.search(pattern, key) for pattern in DROPPED):
            continue
        else:
            target = key
        if target not in ours:
            unexpected.append(key)
            continue
        if target in filled_from:
            duplicate.append(f"{key} and {filled_from[target]} -> {target}")
            continue
        if tuple(tensor.shape) != tuple(ours[target].shape):
            mismatched.append(f"{key}: {tuple(tensor.shape)} vs ours {target}: {tuple(ours[target].shape)}")
            continue
        mapped[target] = tensor
        filled_from[target] = key
    missing = sorted(set(ours) - set(mapped))
    problems = key_problems([("unexpected keys (no place in our model)", sorted(unexpected)),
                             ("missing keys (not in the checkpoint)", missing),
                             ("shape mismatches", mismatched), ("keys filled twice", duplicate)], limit=20)
    if problems:
        raise ValueError(f"checkpoint does not match the {config.vision_tower_type!r} model:\n  " + "\n  ".join(problems))
    return mapped


# -- reading a folder ---------------------------------------------------------------------------------
def _read_file(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)


def read_state_dict(folder: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint folder: a sharded index (bin or safetensors) or a single file.
    An index must list exactly the keys its shards hold."""
    folder = Path(folder)
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index_path = folder / index_name
        if index_path.exists():
            weight_map: dict[str, str] = json.loads(index_path.read_text())["weight_map"]
            state: dict[str, torch.Tensor] = {}
            for shard in sorted(set(weight_map.values())):
                part = _read_file(folder / shard)
                listed = {k for k, v in weight_map.items() if v == shard}
                if set(part) != listed:
                    raise ValueError(f"{shard}: holds {len(part)} keys, {index_name} lists {len(listed)} "
                                     f"(e.g. {sorted(set(part) ^ listed)[:5]})")
                state.update(part)
            return state
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).exists():
            return _read_file(folder / name)
    raise FileNotFoundError(f"{folder}: no model.safetensors[.index.json] or pytorch_model.bin[.index.json]")


def read_config(folder: str | os.PathLike, **overrides) -> LlavaLlamaConfig:
    data = json.loads((Path(folder) / "config.json").read_text())
    model_type = data.get("model_type")
    if model_type not in CONFIG_CLASSES:
        raise ValueError(f"{folder}/config.json: model_type {model_type!r} is not one of {sorted(CONFIG_CLASSES)}")
    data.update(overrides)
    return CONFIG_CLASSES[model_type].from_dict(data)


def load_official_checkpoint(folder: str | os.PathLike, dtype: torch.dtype | None = None,
                             **config_overrides) -> LlavaLlamaForCausalLM:
    """Build our model from an official checkpoint folder's config.json and load its weights strictly.

    `config_overrides` set fields the official configs lack (e.g. `image_token_index`). Shared-router
    copies load through `tie_router_copies` (the lowest MoD layer's copy; differing copies warn).
    """
    from transformers.initialization import no_init_weights

    config = read_config(folder, **config_overrides)
    model_class = {ModMGMConfig: ModMGMForCausalLM, ModLlavaLlamaConfig: ModLlavaLlamaForCausalLM}.get(
        type(config), LlavaLlamaForCausalLM)
    with no_init_weights():  # every parameter comes from the checkpoint
        model = model_class(config)
    if dtype is not None:
        model = model.to(dtype)
    load_official_state_dict(model, read_state_dict(folder))
    return model.eval()


def load_official_state_dict(model: LlavaLlamaForCausalLM, source: dict[str, torch.Tensor]) -> None:
    """Load an official-layout state dict into `model` (strict: see `map_official_state_dict`)."""
    ours = model.state_dict()
    mapped = map_official_state_dict(model.config, source, ours)
    result = model.load_state_dict(mapped, strict=True)
    assert not result.missing_keys and not result.unexpected_keys  # strict=True raises first
    model.tie_router_copies({k: v for k, v in source.items() if k.endswith(ROUTER_KEY_SUFFIX)})


def register_auto_classes() -> None:
    """`AutoModelForCausalLM.from_pretrained` on our own saved mod_mgm folders."""
    from transformers import AutoConfig, AutoModelForCausalLM

    AutoConfig.register(ModMGMConfig.model_type, ModMGMConfig, exist_ok=True)
    AutoModelForCausalLM.register(ModMGMConfig, ModMGMForCausalLM, exist_ok=True)


register_auto_classes()  # importing gamma_mod imports this module
