"""Weight-initialisation helpers shared by the towers."""

from __future__ import annotations

from torch import nn


def mark_initialized(*modules: nn.Module) -> None:
    """Flag a tower's own parameters (adapters, fusion projections) as initialised.

    They are initialised in their constructors with the original models' scheme (e.g. LLaVA-HR's
    zero-initialised MR-Adapter projections, so a fresh adapter is the identity); without the flag
    the model-wide `post_init` would overwrite them with the Llama normal init. Loading a checkpoint
    still overwrites them (loading ignores the flag).
    """
    for module in modules:
        for param in module.parameters():
            param._is_hf_initialized = True


def owning_submodel(tower: nn.Module, module: nn.Module):
    """The transformers model (CLIP, ConvNext) inside `tower` that contains `module`, or None."""
    from transformers import PreTrainedModel

    for sub in tower.modules():
        if isinstance(sub, PreTrainedModel) and any(m is module for m in sub.modules()):
            return sub
    return None
