"""Load pretrained components from local checkpoints into a freshly built model, strictly.

The official recipes start from three pretrained parts (Gamma-MOD scripts/v1_5/fine_tune_mod.sh,
pretrain_llava_hr.sh; MGM scripts/llama/train/stage_2_full_v7b_672_hr_1536.sh):
  llm       an HF Llama folder (lmsys/vicuna-7b-v1.5): `model.embed_tokens`, `model.layers.*`, `model.norm`,
            `lm_head`, the same names as ours. Our tokenizer adds `<image>` as a real token, so the vocabulary
            grows by one: new rows of the input and output embeddings are the mean of the pretrained rows
            (LLaVA's `smart_tokenizer_and_embedding_resize` rule; official LLaVA uses index -200 instead).
  clip      an HF CLIP folder (openai/clip-vit-large-patch14-336): its `vision_model.*` tensors (a full
            CLIPModel; the text tower, projections and logit scale are skipped and counted), or a
            CLIPVisionModel saved by transformers 5 (no `vision_model.` prefix).
  convnext  a timm or open_clip ConvNeXt checkpoint, a file or a folder (timm: `model.safetensors` /
            `pytorch_model.bin`, keys `stem.*`, `stages.*`; open_clip: `open_clip_pytorch_model.bin`, trunk
            under `visual.trunk.`): the trunk only, mapped by `checkpoints.timm_convnext_table`; the classifier /
            CLIP heads and open_clip's text tower are skipped and counted.

  mm_adapter the official stage-1 output `mm_projector.bin` (--pretrain_mm_mlp_adapter): `model.mm_projector.*`,
            plus LLaVA-HR's `model.vision_tower.align_stages.*` or Mini-Gemini's `model.vlm_uni_*` (MGM-Pretrain),
            the parts stage 1 trains.

Every component is checked before any weight is copied: its config must describe the same
architecture as ours (field by field), each of its tensors must land in exactly one of our parameters
with the same shape, and each of our parameters of that component must be filled. Anything else is an
error naming the file and the keys. Tensors are copied one at a time (ZeRO-3 partitions are gathered
for the write), so a 7B LLM is never held twice in memory.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path

import torch

from .checkpoints import DROPPED, key_problems, timm_convnext_table

logger = logging.getLogger(__name__)
COMPONENTS = ("llm", "clip", "convnext", "mm_adapter")
LLM_PREFIXES = ("model.embed_tokens.", "model.layers.", "model.norm.", "lm_head.")
ROUTER_SUFFIX = ".router.weight"  # ours (MoD), never in a Llama checkpoint
# Our CLIP ViT and ConvNeXt trunk locations, per tower family.
CLIP_PREFIX = {"clip": "model.vision_tower.vision_tower.vision_model.",
               "llava_hr": "model.vision_tower.fast_vision_tower.vision_tower.vision_model.",
               "mgm": "model.vision_tower.vision_tower.vision_model."}
CONVNEXT_PREFIX = {"llava_hr": "model.vision_tower.slow_vision_tower.vision_tower.",
                   "mgm": "model.vision_tower.vision_tower_aux."}
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_model.safetensors",
                 "open_clip_pytorch_model.bin")
_INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


class ComponentError(ValueError):
    pass


def required_components(config, stage: str = "pretrain") -> list[str]:
    """The pretrained parts a model built from its spec starts from: llm always; clip with a vision tower;
    convnext for LLaVA-HR and Mini-Gemini; in stage 2 also the stage-1 adapter (official recipes)."""
    needed = ["llm"]
    if getattr(config, "vision_config", None):
        needed.append("clip")
        if config.vision_tower_type in CONVNEXT_PREFIX:
            needed.append("convnext")
        if stage == "finetune":
            needed.append("mm_adapter")
    return needed


def decoder_parameter_count(text: dict) -> int:
    """Parameters of a spec's decoder layers (embeddings excluded: the vocabulary comes from the tokenizer)."""
    d, ff, layers = text["hidden_size"], text["intermediate_size"], text["num_hidden_layers"]
    heads = text["num_attention_heads"]
    kv = text.get("num_key_value_heads") or heads
    head_dim = text.get("head_dim") or d // heads
    attention = d * heads * head_dim * 2 + d * kv * head_dim * 2  # q, o + k, v
    return layers * (attention + 3 * d * ff)


# -- reading checkpoints ------------------------------------------------------------------------------
def _checkpoint_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise ComponentError(f"{path}: no such file or folder")
    for name in _INDEX_FILES:
        if (path / name).exists():
            weight_map = json.loads((path / name).read_text())["weight_map"]
            return [path / shard for shard in sorted(set(weight_map.values()))]
    for name in _WEIGHT_FILES:
        if (path / name).exists():
            return [path / name]
    raise ComponentError(f"{path}: no weights found (looked for {', '.join(_INDEX_FILES + _WEIGHT_FILES)})")


def iter_tensors(path: str | os.PathLike) -> Iterator[tuple[str, torch.Tensor]]:
    """(key, tensor) of a checkpoint file or folder, one shard at a time (safetensors lazily, torch
    files memory-mapped with weights_only: tensors only, never arbitrary pickles)."""
    for file in _checkpoint_files(Path(path)):
        if file.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(file), framework="pt") as f:
                for key in f.keys():
                    yield key, f.get_tensor(key)
            continue
        try:
            state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # the legacy (pre-zip) format cannot be memory-mapped
            state = torch.load(file, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and set(state) == {"state_dict"}:  # a training checkpoint's wrapper
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise ComponentError(f"{file}: not a state dict ({type(state).__name__})")
        yield from state.items()
        del state


def checkpoint_keys(path: str | os.PathLike) -> list[str]:
    return [key for key, _ in iter_tensors(path)]


# -- architecture checks ------------------------------------------------------------------------------
def _compare(what: str, source: str, theirs, ours, fields: tuple[str, ...]) -> None:
    diffs = [f"{f}: {getattr(theirs, f, None)!r} (checkpoint) vs {getattr(ours, f, None)!r} (ours)"
             for f in fields if getattr(theirs, f, None) != getattr(ours, f, None)]
    if diffs:
        raise ComponentError(f"{what} {source} is a different architecture than the model spec: " + "; ".join(diffs))


def _rope_theta(config) -> float | None:
    params = getattr(config, "rope_parameters", None) or {}
    return params.get("rope_theta", getattr(config, "rope_theta", None))


def check_llm_config(folder: str | os.PathLike, config) -> None:
    from transformers import LlamaConfig

    if not (Path(folder) / "config.json").exists():
        raise ComponentError(f"model.llm {folder}: no config.json (expected an HF Llama folder)")
    theirs = LlamaConfig.from_pretrained(str(folder))
    _compare("model.llm", str(folder), theirs, config,
             ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
              "head_dim", "hidden_act", "rms_norm_eps", "attention_bias", "mlp_bias"))
    if _rope_theta(theirs) != _rope_theta(config):
        raise ComponentError(f"model.llm {folder}: rope theta {_rope_theta(theirs)} vs ours {_rope_theta(config)}")


def check_clip_config(folder: str | os.PathLike, config) -> None:
    from transformers import CLIPVisionConfig

    if not (Path(folder) / "config.json").exists():
        raise ComponentError(f"model.clip {folder}: no config.json (expected an HF CLIP folder)")
    theirs = CLIPVisionConfig.from_pretrained(str(folder))  # a CLIPModel folder gives its vision_config
    _compare("model.clip", str(folder), theirs, config.clip_vision_config(),
             ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "image_size",
              "patch_size", "num_channels", "hidden_act", "layer_norm_eps"))


# -- copying ------------------------------------------------------------------------------------------
def _write(param: torch.nn.Parameter, tensor: torch.Tensor, rows: int | None = None) -> None:
    """param <- tensor (or its first `rows` rows <- tensor, the rest <- the mean row)."""
    from ..mod.router import gathered_for_write

    with gathered_for_write(param), torch.no_grad():
        if rows is None:
            param.copy_(tensor.to(param.dtype))
        else:
            param[:rows].copy_(tensor.to(param.dtype))
            param[rows:].copy_(tensor.float().mean(0, keepdim=True).to(param.dtype).expand_as(param[rows:]))


def _shape(param: torch.nn.Parameter) -> tuple[int, ...]:
    return tuple(getattr(param, "ds_shape", param.shape))


def _dropped(key: str) -> bool:
    return any(re.search(pattern, key) for pattern in DROPPED)


def _load(model, what: str, source: str, tensors: Iterator[tuple[str, torch.Tensor]], target_of, ours: set[str],
          resizable: tuple[str, ...] = ()) -> dict[str, int]:
    """Copy every tensor `target_of(key)` names into our parameter; strict both ways.

    target_of(key) -> our name, None (skipped, counted by reason) or raises for a key that has no place.
    """
    params = dict(model.named_parameters())
    filled: dict[str, str] = {}
    skipped: dict[str, int] = {}
    unexpected, mismatched, duplicate = [], [], []
    for key, tensor in tensors:
        target = target_of(key)
        if isinstance(target, tuple):  # (None, reason)
            skipped[target[1]] = skipped.get(target[1], 0) + 1
            continue
        if target not in ours:
            unexpected.append(key)
            continue
        if target in filled:
            duplicate.append(f"{key} and {filled[target]} -> {target}")
            continue
        shape, theirs = _shape(params[target]), tuple(tensor.shape)
        rows = None
        if theirs != shape:
            if target in resizable and theirs[1:] == shape[1:] and theirs[0] <= shape[0]:
                rows = theirs[0]  # our vocabulary adds tokens (<image>)
            else:
                mismatched.append(f"{key} {theirs} vs ours {target} {shape}")
                continue
        # Written before the whole component is checked: any problem below raises, and the model is dropped.
        _write(params[target], tensor, rows)
        if rows is not None:
            logger.info("%s: %s has %d rows, ours %d: the %d new rows are the mean of the pretrained ones",
                        what, key, rows, shape[0], shape[0] - rows)
        filled[target] = key
    missing = sorted(ours - set(filled))
    problems = key_problems([("tensors with no place in our model", sorted(unexpected)),
                             ("shape mismatches", mismatched), ("parameters filled twice", duplicate),
                             ("of our parameters not in the checkpoint", missing)], limit=10)
    if problems:
        raise ComponentError(f"{what} {source} does not match the model:\n  " + "\n  ".join(problems))
    detail = "".join(f"; skipped {n} {reason}" for reason, n in skipped.items())
    logger.info("%s: loaded %d tensors from %s%s", what, len(filled), source, detail)
    return {"loaded": len(filled), **{f"skipped {reason}": n for reason, n in skipped.items()}}


# -- the three components ----------------------------------------------------------------------------
def load_llm(model, folder: str | os.PathLike) -> dict[str, int]:
    """An HF Llama folder -> our embeddings, decoder layers, final norm and lm_head."""
    check_llm_config(folder, model.config)
    ours = {n for n, _ in model.named_parameters() if n.startswith(LLM_PREFIXES) and not n.endswith(ROUTER_SUFFIX)}

    def target_of(key):
        return (None, "rotary-frequency buffers") if _dropped("." + key) else key

    return _load(model, "model.llm", str(folder), iter_tensors(folder), target_of, ours,
                 resizable=("model.embed_tokens.weight", "lm_head.weight"))


def load_clip(model, folder: str | os.PathLike) -> dict[str, int]:
    """An HF CLIP folder (CLIPModel or CLIPVisionModel) -> our CLIP ViT."""
    family = model.config.vision_tower_type
    if not getattr(model.config, "vision_config", None) or family not in CLIP_PREFIX:
        raise ComponentError(f"model.clip {folder}: this model has no CLIP tower")
    check_clip_config(folder, model.config)
    prefix = CLIP_PREFIX[family]
    ours = {n for n, _ in model.named_parameters() if n.startswith(prefix)}
    keys = checkpoint_keys(folder)
    nested = any(k.startswith("vision_model.") for k in keys)  # CLIPModel, or a transformers-4 CLIPVisionModel

    def target_of(key):
        if _dropped("." + key):
            return None, "position-id buffers"
        if nested:
            if not key.startswith("vision_model."):
                return None, "text-tower / projection tensors"
            key = key[len("vision_model."):]
        return prefix + key

    return _load(model, "model.clip", str(folder), iter_tensors(folder), target_of, ours)


def convnext_source_prefix(keys: list[str], source: str) -> str:
    """Where the trunk sits in a checkpoint: '' (timm), 'visual.trunk.' (open_clip), ..."""
    stems = sorted({k[: -len("stem.0.weight")] for k in keys if k.endswith("stem.0.weight")})
    if len(stems) != 1:
        raise ComponentError(f"model.convnext {source}: expected one ConvNeXt trunk (a `stem.0.weight` key), "
                             f"found {len(stems)}: {stems[:5]}")
    return stems[0]


def load_convnext(model, path: str | os.PathLike) -> dict[str, int]:
    """A timm / open_clip ConvNeXt checkpoint -> our ConvNeXt trunk (LLaVA-HR slow tower, MGM aux tower)."""
    family = model.config.vision_tower_type
    if family not in CONVNEXT_PREFIX:
        raise ComponentError(f"model.convnext {path}: a {family!r} model has no ConvNeXt tower")
    dst = CONVNEXT_PREFIX[family]
    src = convnext_source_prefix(checkpoint_keys(path), str(path))
    table = timm_convnext_table(model.config.vision_config_hr["depths"], src, dst, head=True)
    ours = {n for n, _ in model.named_parameters() if n.startswith(dst)}

    def target_of(key):
        if key in table:
            return table[key] if table[key] is not None else (None, "classifier-head tensors")
        if not key.startswith(src):
            return None, "tensors outside the trunk (CLIP text tower / projection head)"
        return key  # inside the trunk but not in the table: reported as having no place

    return _load(model, "model.convnext", str(path), iter_tensors(path), target_of, ours)


def adapter_prefixes(config) -> tuple[str, ...]:
    """Our parameters an official stage-1 `mm_projector.bin` holds (what stage 1 trains)."""
    extra = {"llava_hr": ("model.vision_tower.align_stages.",), "mgm": ("model.vision_tower.vlm_uni_",)}
    return ("model.mm_projector.",) + extra.get(config.vision_tower_type, ())


def load_mm_adapter(model, path: str | os.PathLike) -> dict[str, int]:
    """An official stage-1 `mm_projector.bin` -> our projector (+ LLaVA-HR MR fusion / Mini-Gemini mining)."""
    from .checkpoints import official_table

    if not getattr(model.config, "vision_config", None):
        raise ComponentError(f"model.mm_adapter {path}: this model has no vision tower")
    table = official_table(model.config)  # Mini-Gemini: model.vlm_uni_* -> model.vision_tower.vlm_uni_*
    prefixes = adapter_prefixes(model.config)
    ours = {n for n, _ in model.named_parameters() if n.startswith(prefixes)}

    def target_of(key):
        target = table.get(key, key)
        return target if target is not None and target.startswith(prefixes) else key

    return _load(model, "model.mm_adapter", str(path), iter_tensors(path), target_of, ours)


LOADERS = {"llm": load_llm, "clip": load_clip, "convnext": load_convnext, "mm_adapter": load_mm_adapter}


def load_components(model, components: dict[str, str]) -> dict[str, dict[str, int]]:
    """Load each given component (llm / clip / convnext / mm_adapter -> local path) into `model`, in place."""
    unknown = sorted(set(components) - set(LOADERS))
    if unknown:
        raise ComponentError(f"unknown components {unknown} (known: {list(LOADERS)})")
    return {name: LOADERS[name](model, path) for name, path in components.items() if path}
