"""Turn chosen dense decoder layers of a loaded model into MoD layers, in place; translate official
p-MoD configs and state dicts (MCG-NJU/p-MoD pmod_llava_llama.py) to ours and back.

Our LLaVA fork converts here; other model families register a converter (`register_converter`,
done by gamma_mod/families on import) so that this module never imports a family."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

from ..model.llava_llama import LlavaLlamaForCausalLM, build_decoder_layers
from .config import ModConfig
from .layer import is_mod_layer
from .strategies import prd_retention_for

logger = logging.getLogger(__name__)

# (accepts(model) -> bool, convert(model, layers, skip_ratio, router_aux_loss_coef, **mod_options) -> model)
_CONVERTERS: list[tuple[Callable[[Any], bool], Callable[..., Any]]] = []


def register_converter(accepts: Callable[[Any], bool], convert: Callable[..., Any]) -> None:
    """Let `convert_to_mod` handle models that `accepts` (a model family outside our fork)."""
    _CONVERTERS.append((accepts, convert))


def convert_to_mod(
    model: Any,
    layers: list[int] | None = None,
    routing_ratio: float = 0.5,
    router_aux_loss_coef: float = 0.01,
    **mod_options: Any,
) -> LlavaLlamaForCausalLM:
    """Replace `model.model.layers[i]` for i in `layers` by MoD layers carrying the same weights.

    `routing_ratio` is the fraction of routable tokens SKIPPED (official `capacity_factor`); with
    strategy="pmod" the per-layer ratios come from the PRD schedule instead, and `layers=None`
    lets that schedule pick the MoD layers (no ARank pass needed).
    Every parameter of each replaced layer must land in its MoD twin (asserted); the only new
    parameter is the router. The config gains the `mod` section, so `save_pretrained` /
    `from_pretrained` rebuild the same model.

    A Hugging Face family model (llava-hf, LLaVA-OneVision, Qwen2.5-VL, Qwen3-VL) goes to its family's
    converter and comes back as its MoD twin (gamma_mod/families/modeling.py), the same object re-classed.
    """
    if not isinstance(model, LlavaLlamaForCausalLM):
        for accepts, convert in _CONVERTERS:
            if accepts(model):
                return convert(model, layers, routing_ratio, router_aux_loss_coef, **mod_options)
        raise ValueError(f"convert_to_mod: {type(model).__name__} (model_type "
                         f"{getattr(getattr(model, 'config', None), 'model_type', None)!r}) is not a model gamma-mod "
                         "converts (our LLaVA fork or a family in gamma_mod.families)")
    config = model.config
    if layers is None:
        if mod_options.get("strategy") != "pmod":
            raise ValueError("convert_to_mod needs `layers` (e.g. from select_mod_layers on an ARank vector); "
                             "only strategy='pmod' picks them itself (progressive ratio decay)")
        probe = ModConfig(strategy="pmod", **{k: v for k, v in mod_options.items() if k.startswith("prd_")})
        # Layer 0 stays dense even where the schedule would route it (see PModStrategy).
        layers = [i for i in prd_retention_for(probe, config.num_hidden_layers) if i != 0]
    if config.mod_config() is not None:
        raise ValueError(f"model already has MoD layers {config.mod_config().mod_layers_idx}; convert a dense model")
    mod = ModConfig(
        mod_layers_idx=list(layers), capacity_factor=routing_ratio, router_aux_loss_coef=router_aux_loss_coef,
        **mod_options,
    )
    mod.validate_against(config.num_hidden_layers)
    config.mod = mod.to_dict()
    new_layers = build_decoder_layers(config)
    config.mod = new_layers[mod.mod_layers_idx[0]].mod.to_dict() if mod.mod_layers_idx else config.mod
    reference = next(model.parameters())
    for i in mod.mod_layers_idx:
        old = model.model.layers[i]
        new = new_layers[i].to(device=reference.device, dtype=reference.dtype)
        result = new.load_state_dict(old.state_dict(), strict=False)
        unexpected = list(result.unexpected_keys)
        missing = [k for k in result.missing_keys if not k.startswith("router.")]
        if unexpected or missing:
            raise RuntimeError(f"layer {i}: weights do not map onto the MoD layer (missing {missing}, unexpected {unexpected})")
        model.model.layers[i] = new
    n_mod = sum(is_mod_layer(layer) for layer in model.model.layers)
    logger.info("converted %d of %d decoder layers to MoD (skip ratio %.2f): %s",
                n_mod, config.num_hidden_layers, routing_ratio, mod.mod_layers_idx)
    return model


# -- official p-MoD (MCG-NJU/p-MoD, llava/model/language_model/pmod_llava_llama.py) -----------------------
OFFICIAL_PMOD_DECAY = re.compile(r"(\w+)_decay_(\d+\.\d+)_(\d+\.\d+)")  # "{schedule}_decay_{max}_{min}"
OFFICIAL_PMOD_FIXED = {  # layer sets with one ratio (mod_router_factor) everywhere
    "deep_all": lambda n: range(2, n - 1),
    "deep_all_include_last": lambda n: range(2, n),
    "interleave": lambda n: range(1, n, 2),
}
OFFICIAL_PMOD_NORM = re.compile(r"tanh_(\d+\.\d+|\d+)_(-?\d+\.\d+|-?\d+)")  # "tanh_{scale}_{bias}"


def pmod_config_from_official(official: dict[str, Any], num_hidden_layers: int) -> ModConfig:
    """The `mod` section that reproduces an official p-MoD config.json (`mod_target_layers`,
    `mod_router_factor`, `mod_weight_norm`, `mod_target_token_type`, `mod_bias_enabled`).

    Only what our layer implements is accepted; anything else is an error naming the field.
    """
    def field(name: str) -> Any:
        if name not in official:
            raise ValueError(f"official p-MoD config lacks `{name}`")
        return official[name]

    if field("mod_target_token_type") != "vision_all":
        raise ValueError(f"mod_target_token_type {official['mod_target_token_type']!r}: only 'vision_all' is supported")
    if not field("mod_bias_enabled"):
        raise ValueError("mod_bias_enabled false: our p-MoD router always has a bias")
    norm = OFFICIAL_PMOD_NORM.fullmatch(str(field("mod_weight_norm")))
    if norm is None or float(norm.group(2)) != 1.0:
        raise ValueError(f"mod_weight_norm {official['mod_weight_norm']!r}: only 'tanh_<scale>_1' is supported")
    factor = float(field("mod_router_factor"))
    target = str(field("mod_target_layers"))
    options: dict[str, Any] = dict(strategy="pmod", pmod_alpha=float(norm.group(1)))
    decay = OFFICIAL_PMOD_DECAY.fullmatch(target)
    if decay is not None:
        options.update(prd_schedule=decay.group(1), prd_dense_above=float(decay.group(2)),
                       prd_floor=float(decay.group(3)), prd_average_ratio=factor, prd_divisor=31)
        probe = ModConfig(**options)
        retention = prd_retention_for(probe, num_hidden_layers)
    elif target in OFFICIAL_PMOD_FIXED:
        retention = {i: factor for i in OFFICIAL_PMOD_FIXED[target](num_hidden_layers)}
    else:
        raise ValueError(f"mod_target_layers {target!r}: expected '<schedule>_decay_<max>_<min>' or one of "
                         f"{sorted(OFFICIAL_PMOD_FIXED)}")
    mod = ModConfig(mod_layers_idx=sorted(retention), layer_capacity={i: 1.0 - r for i, r in retention.items()},
                    **options)
    mod.validate_against(num_hidden_layers)
    return mod


def pmod_state_dict_from_official(state: dict[str, Any], mod_layers: list[int]) -> dict[str, Any]:
    """Official MoD layers wrap the dense one (`model.layers.{i}.decoder_layer.*`); ours are it (`model.layers.{i}.*`).
    Router keys (`model.layers.{i}.router.router.{weight,bias}`) are the same."""
    prefixes = {f"model.layers.{i}.decoder_layer.": f"model.layers.{i}." for i in mod_layers}
    return {_swap_prefix(k, prefixes): v for k, v in state.items()}


def pmod_state_dict_to_official(state: dict[str, Any], mod_layers: list[int]) -> dict[str, Any]:
    prefixes = {f"model.layers.{i}.": f"model.layers.{i}.decoder_layer." for i in mod_layers}
    return {k if ".router." in k else _swap_prefix(k, prefixes): v for k, v in state.items()}


def _swap_prefix(key: str, prefixes: dict[str, str]) -> str:
    for old, new in prefixes.items():
        if key.startswith(old):
            return new + key[len(old):]
    return key
