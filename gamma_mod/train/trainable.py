"""Which parameters train: named groups, resolved to parameter-name prefixes per tower family.

Groups (`trainable:` in a train config; TRAINABLE_GROUPS in args.py):
  mm_projector         the vision -> LLM projector (every family)
  llm                  embeddings, decoder layers (MoD routers included), final norm, lm_head
  clip                 the CLIP ViT (LLaVA-1.5 tower, LLaVA-HR fast branch, Mini-Gemini low-res views)
  convnext             the ConvNeXt trunk (LLaVA-HR slow branch, Mini-Gemini aux tower)
  align_stages         LLaVA-HR's final MR fusion (`align_stages.0`)
  align_stages_latent  LLaVA-HR's three MR-Adapters inside the ViT
  vlm_uni              Mini-Gemini's patch-info-mining projections (`vlm_uni_{query,aux,val}_projector`)

The official recipes (the values set in configs/train/*.yaml):
  LLaVA-HR stage 1 (Gamma-MOD train.py, tune_mm_mlp_adapter + is_multipath_encoder): mm_projector and
      every parameter whose name contains `align_stages`; with freeze_vision's default (True) the
      MR-Adapters do not exist then, so `align_stages_latent` stays frozen here (fresh adapters are the identity).
  LLaVA-HR stage 2 (fine_tune_mod.sh, --freeze_vision False): every parameter.
  Mini-Gemini stage 2 (MGM train.py; its towers call requires_grad_(False) when loaded): everything
      except the CLIP and ConvNeXt towers.
"""

from __future__ import annotations

import logging

from torch import nn

from .args import TRAINABLE_GROUPS

logger = logging.getLogger(__name__)

_TOWER = "model.vision_tower."
# group -> tower family -> parameter-name prefixes. A family missing from a group's entry lacks that part.
PREFIXES: dict[str, dict[str, tuple[str, ...]]] = {
    "mm_projector": {f: ("model.mm_projector.",) for f in ("clip", "llava_hr", "mgm", None)},
    "llm": {f: ("model.embed_tokens.", "model.layers.", "model.norm.", "lm_head.")
            for f in ("clip", "llava_hr", "mgm", None)},
    "clip": {"clip": (_TOWER + "vision_tower.",), "llava_hr": (_TOWER + "fast_vision_tower.",),
             "mgm": (_TOWER + "vision_tower.",)},
    "convnext": {"llava_hr": (_TOWER + "slow_vision_tower.",), "mgm": (_TOWER + "vision_tower_aux.",)},
    "align_stages": {"llava_hr": (_TOWER + "align_stages.",)},
    "align_stages_latent": {"llava_hr": (_TOWER + "align_stages_latent.",)},
    "vlm_uni": {"mgm": (_TOWER + "vlm_uni_",)},
}
assert tuple(PREFIXES) == TRAINABLE_GROUPS  # the config validates names against TRAINABLE_GROUPS


def tower_family(config) -> str | None:
    """clip | llava_hr | mgm, or None for a text-only model."""
    return config.vision_tower_type if getattr(config, "vision_config", None) else None


def group_prefixes(group: str, family: str | None) -> tuple[str, ...]:
    table = PREFIXES.get(group)
    if table is None:
        raise ValueError(f"unknown trainable group {group!r} (known: {sorted(PREFIXES)})")
    if family not in table:
        available = sorted(g for g, t in PREFIXES.items() if family in t)
        raise ValueError(f"trainable group {group!r} does not exist in a {family or 'text-only'!r} model "
                         f"(its groups: {available})")
    return table[family]


# Hugging Face families (gamma_mod.families): the groups that exist there, from the family adapter's paths.
FAMILY_GROUPS = ("mm_projector", "llm", "clip")


def family_adapter(model: nn.Module):
    """The model's Hugging Face family adapter, or None for our LLaVA fork (and for models of no family)."""
    from ..families import UnknownFamilyError, get_family

    try:
        adapter = get_family(model.config)
    except UnknownFamilyError:
        return None
    return None if adapter.name == "llava_fork" else adapter


def family_group_owners(model: nn.Module, adapter, groups: list[str]) -> dict[str, str]:
    """parameter name -> group, for a Hugging Face family model. mm_projector = the adapter's projector_modules
    (Qwen's merger, LLaVA's multi_modal_projector, OneVision's image_newline too); clip = the vision encoder
    (adapter.vision_modules, projector excluded; the name is the fork's, the tower is the family's own: CLIP,
    SigLIP, Qwen's ViT); llm = every other parameter (embeddings, decoder layers with MoD routers, norm, lm_head)."""
    unknown = [g for g in groups if g not in FAMILY_GROUPS]
    if unknown:
        raise ValueError(f"trainable groups {unknown} do not exist in a {adapter.name!r} model "
                         f"(its groups: {list(FAMILY_GROUPS)})")
    projector = {id(p) for p in adapter.projector_parameters(model)}
    vision = {id(p) for p in adapter.vision_parameters(model)}
    owners = {}
    for name, p in model.named_parameters():
        group = "mm_projector" if id(p) in projector else "clip" if id(p) in vision else "llm"
        if group in groups:
            owners[name] = group
    return owners


def set_trainable(model: nn.Module, groups: list[str]) -> list[str]:
    """Freeze everything, then unfreeze `groups`; returns the trainable parameter names (sorted)."""
    adapter = family_adapter(model)
    if adapter is not None:
        owners_of = family_group_owners(model, adapter, groups)
        family = adapter.name
    else:
        family = tower_family(model.config)
        prefixes = {group: group_prefixes(group, family) for group in groups}
        owners_of = None
    for p in model.parameters():
        p.requires_grad_(False)
    counts: dict[str, int] = {}

    def size(p):  # ZeRO-3 partitions hold 0 local elements; ds_numel is the full size
        return getattr(p, "ds_numel", p.numel())

    names = []
    for name, p in model.named_parameters():
        if owners_of is not None:
            owners = [owners_of[name]] if name in owners_of else []
        else:
            owners = [g for g, pre in prefixes.items() if name.startswith(pre)]
        if owners:
            p.requires_grad_(True)
            names.append(name)
            counts[owners[0]] = counts.get(owners[0], 0) + size(p)
    empty = [g for g in groups if g not in counts]
    if empty:
        raise ValueError(f"trainable groups {empty} match no parameter of this {family!r} model")
    total = max(1, sum(size(p) for p in model.parameters()))
    trainable = sum(counts.values())
    detail = ", ".join(f"{g} {n / 1e6:.2f}M" for g, n in counts.items())
    logger.info("trainable: %d of %d parameters (%.1f%%): %s", trainable, total, 100 * trainable / total, detail)
    return sorted(names)
