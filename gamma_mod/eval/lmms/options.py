"""The plugin's model arguments (`--model_args k=v,...`), typed and checked before anything loads.

lmms-eval parses `k=v` pairs with its own rule (numbers become int/float, "true"/"false" bools), so
each field is coerced again here: a typo or a wrong value is one error naming the argument, never
an unknown keyword silently ignored.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ...mod.config import DECODE_MODES, PREFILL_MODES

DTYPES = ("float32", "bfloat16", "float16")
ATTN_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2")
COMPAT_MODES = ("ours", "official")


class PluginArgumentError(ValueError):
    """A bad `--model_args` value; the message names the argument."""


@dataclass
class PluginOptions:
    pretrained: str  # local model folder (config, weights, tokenizer)
    template: str = "vicuna_v1"  # conversation template (gamma_mod.data.templates)
    dtype: str | None = None  # default: bfloat16 on cuda, float32 on cpu (as `gamma-mod eval`)
    device: str | None = None  # default: cuda if available, else cpu
    attn_implementation: str | None = None  # default: transformers' choice (sdpa)
    batch_size: int = 1
    # Used when a task sets no max_new_tokens; 1024 is lmms-eval's LLaVA model default.
    max_new_tokens: int = 1024
    # MoD inference switches, written into the config's `mod` section before the model is built
    # (a MoD layer reads them at construction). None: the checkpoint's own setting.
    prefill: str | None = None  # "topk" | "threshold"
    decode: str | None = None  # "dense" | "threshold"
    prefill_threshold: float | None = None
    decode_threshold: float | None = None
    compat: str | None = None  # "ours" | "official" (needs a gamma-mod with the `mod.compat` field)
    # Path of a JSON efficiency report (skipped-token fraction per MoD layer, analytic TFLOPs per
    # sample), written when the run ends and printed beside lmms-eval's score table.
    log_efficiency: str | None = None

    @classmethod
    def from_kwargs(cls, kwargs: dict[str, Any]) -> "PluginOptions":
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(kwargs) - set(fields))
        if unknown:
            raise PluginArgumentError(f"gamma_mod: unknown model_args {unknown}; known: {sorted(fields)}")
        if kwargs.get("pretrained") in (None, ""):
            raise PluginArgumentError("gamma_mod: model_args needs pretrained=<local model folder>")
        values = {name: _coerce(name, fields[name].type, value) for name, value in kwargs.items()}
        return cls(**values)

    def __post_init__(self) -> None:
        _choice("dtype", self.dtype, DTYPES)
        _choice("attn_implementation", self.attn_implementation, ATTN_IMPLEMENTATIONS)
        _choice("prefill", self.prefill, PREFILL_MODES)
        _choice("decode", self.decode, DECODE_MODES)
        _choice("compat", self.compat, COMPAT_MODES)
        if self.batch_size < 1:
            raise PluginArgumentError(f"gamma_mod: batch_size must be >= 1, got {self.batch_size}")
        if self.max_new_tokens < 1:
            raise PluginArgumentError(f"gamma_mod: max_new_tokens must be >= 1, got {self.max_new_tokens}")

    def mod_overrides(self) -> dict[str, Any]:
        """The `mod` config fields these options set (only those given)."""
        names = ("prefill", "decode", "prefill_threshold", "decode_threshold", "compat")
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}


def _choice(name: str, value: str | None, allowed: tuple[str, ...]) -> None:
    if value is not None and value not in allowed:
        raise PluginArgumentError(f"gamma_mod: {name} must be one of {allowed}, got {value!r}")


def _coerce(name: str, annotation: str, value: Any) -> Any:
    """lmms-eval already turned "8" into 8 and "true" into True; undo or check that per field type."""
    if value is None:
        return None
    if annotation == "int":
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, str) and value.isdigit())):
            # "auto" batch sizes (lmms-eval's HF models) are not supported: the batch is what it says.
            raise PluginArgumentError(f"gamma_mod: {name} must be an integer, got {value!r}")
        return int(value)
    if annotation == "float | None":
        try:
            return float(value)
        except (TypeError, ValueError):
            raise PluginArgumentError(f"gamma_mod: {name} must be a number, got {value!r}") from None
    if isinstance(value, bool):  # log_efficiency=true would be a file called "True"
        raise PluginArgumentError(f"gamma_mod: {name} must be a string, got {value!r}")
    return str(value)
