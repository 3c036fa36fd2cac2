"""A model folder on disk: checked before anything loads from it.

`from_pretrained` on a path that is not a model folder falls through to the Hugging Face Hub and
fails with "Repo id must be in the form 'repo_name'..." several tracebacks deep. Every command that
takes a model folder (train's model.init, eval, convert, arank, speed, skipmap) checks it here first
and fails with one line naming the path and what a model folder must hold (ModelFolderError, a
ConfigError: exit code 2 at the CLI).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from transformers import AutoModelForCausalLM

from ..errors import ModelFolderError
from .configuration import load_config

WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")
WHAT_IT_HOLDS = "a model folder holds config.json and *.safetensors or pytorch_model*.bin"
# Everything a tokenizer folder may hold (Llama sentencepiece, fast tokenizers, BPE vocabularies).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "added_tokens.json", "vocab.json", "merges.txt", "chat_template.jinja", "chat_template.json")
# A Hugging Face family's processor besides its tokenizer (image / video processor, processor kwargs).
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json", "video_preprocessor_config.json")
# Any one of these is enough for AutoTokenizer to build a tokenizer.
_TOKENIZER_CORE = ("tokenizer.json", "tokenizer.model", "vocab.json")


def _prefix(what: str | None) -> str:
    return f"{what}: " if what else ""


def check_model_folder(path: str | os.PathLike, *, tokenizer: bool = False, what: str | None = None) -> Path:
    """The folder as a Path, or ModelFolderError naming `path` (and the flag or key `what` gave it).

    With `tokenizer`, the folder must also hold a tokenizer (commands that read prompts need it).
    """
    folder = Path(path)
    if not folder.is_dir():
        raise ModelFolderError(f"{_prefix(what)}no model folder at {path} ({WHAT_IT_HOLDS})")
    missing = []
    if not (folder / "config.json").is_file():
        missing.append("config.json")
    if not any(next(folder.glob(pattern), None) for pattern in WEIGHT_PATTERNS):
        missing.append("weights (*.safetensors or pytorch_model*.bin)")
    if missing:
        raise ModelFolderError(f"{_prefix(what)}no model folder at {path}: no {' and no '.join(missing)} there "
                               f"({WHAT_IT_HOLDS})")
    if tokenizer:
        check_tokenizer_folder(folder, what=what)
    return folder


def check_tokenizer_folder(path: str | os.PathLike, *, what: str | None = None) -> Path:
    folder = Path(path)
    if not folder.is_dir():
        raise ModelFolderError(f"{_prefix(what)}no tokenizer folder at {path} "
                               f"(a tokenizer folder holds {' or '.join(_TOKENIZER_CORE)})")
    if not any((folder / name).is_file() for name in _TOKENIZER_CORE):
        raise ModelFolderError(f"{_prefix(what)}{path} holds no tokenizer ({' or '.join(_TOKENIZER_CORE)}); "
                               f"save the tokenizer next to the model")
    return folder


def load_model_folder(path: str | os.PathLike, model_class: Any = None, *, tokenizer: bool = False,
                      what: str | None = None, compat: str | None = None, **kwargs: Any):
    """`model_class.from_pretrained(path, **kwargs)` after `check_model_folder`; a folder whose files
    do not load is a ModelFolderError too. Default class: AutoModelForCausalLM (importing gamma_mod
    registered our model types with it). `compat` ("ours" / "official") overrides the MoD behaviour the
    folder's config selects (see gamma_mod/mod/compat.py); a bad `mod` section names the config.json."""
    folder = check_model_folder(path, tokenizer=tokenizer, what=what)
    if family_folder(folder):
        return _load_family_folder(folder, path, what, compat, **kwargs)
    model_class = model_class or AutoModelForCausalLM
    try:
        if "config" not in kwargs:
            kwargs["config"] = load_config(folder, compat)
        return model_class.from_pretrained(str(folder), **kwargs)
    except (OSError, SafetensorError) as e:
        # A truncated or corrupt weights file, an unreadable config.json.
        raise ModelFolderError(f"{_prefix(what)}model folder {path} does not load: {e}") from e


def family_folder(path: str | os.PathLike) -> str | None:
    """The Hugging Face family of a model folder (llava_hf, llava_onevision, qwen2_5_vl, qwen3_vl; plain or
    MoD twin), or None for our LLaVA fork (and for a folder without a readable config.json model_type)."""
    from ..data.processor import FORK_MODEL_TYPES

    try:
        model_type = json.loads((Path(path) / "config.json").read_text()).get("model_type", "")
    except (OSError, json.JSONDecodeError):
        return None
    if not model_type or model_type in FORK_MODEL_TYPES:
        return None
    from ..families import UnknownFamilyError, get_family

    try:
        return get_family(model_type).name
    except UnknownFamilyError as e:
        raise ModelFolderError(f"model folder {path}: {e}") from None


def _load_family_folder(folder: Path, path, what: str | None, compat: str | None, **kwargs: Any):
    """A Hugging Face family folder through its Auto class (gamma_mod.families.load_family_model): every
    command that loads a model folder loads these the same way (a model class asked for is the fork's and
    does not apply; the official compat mode exists only for the fork)."""
    from ..families import load_family_model

    if compat == "official":
        raise ModelFolderError(f"{_prefix(what)}{path} is a Hugging Face family model; the official gamma-MoD "
                               "compat mode exists only for the LLaVA fork (llava_llama)")
    kwargs.pop("config", None)
    try:
        return load_family_model(folder, **kwargs)
    except (OSError, SafetensorError) as e:
        raise ModelFolderError(f"{_prefix(what)}model folder {path} does not load: {e}") from e
