"""Turn chosen dense decoder layers of a loaded model into MoD layers, in place."""

from __future__ import annotations

import logging
from typing import Any

from ..model.llava_llama import LlavaLlamaForCausalLM, build_decoder_layers
from .config import ModConfig
from .layer import MoDDecoderLayer
from .strategies import prd_retention_for

logger = logging.getLogger(__name__)


def convert_to_mod(
    model: LlavaLlamaForCausalLM,
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
    """
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
    n_mod = sum(isinstance(layer, MoDDecoderLayer) for layer in model.model.layers)
    logger.info("converted %d of %d decoder layers to MoD (skip ratio %.2f): %s",
                n_mod, config.num_hidden_layers, routing_ratio, mod.mod_layers_idx)
    return model
