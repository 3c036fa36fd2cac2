"""MoD twins of the Hugging Face families: the transformers model with chosen decoder layers as MoD layers.

For each family (llava_hf, llava_onevision, qwen2_5_vl, qwen3_vl) a config subclass
(`model_type: gamma_mod_<family>`, plus our `mod` section, as LlavaLlamaConfig carries it) and a
subclass of the family's `...ForConditionalGeneration`:

    __init__   the transformers model, then the layers at mod.mod_layers_idx become
               `mod_layer_class(DenseLayer)` layers carrying the dense weights (every key asserted)
    forward    builds the ModForwardContext from the batch (routable = system prompt + image and
               video tokens per row, from input_ids and the family's token ids; decode tokens from
               `mod_decode_start`, which generate() sets), hands it to the MoD layers through a
               shared ModContextHolder (transformers' own text-model loop runs unchanged: its rotary
               (M-RoPE included), masks, DeepStack), then adds router_aux_loss_coef x routing loss
    save       every MoD layer's router under its own key (safetensors refuses aliased tensors)

Importing this module registers the twins with AutoConfig, AutoModelForImageTextToText and
AutoModelForCausalLM (no trust_remote_code). `convert_family_to_mod` turns a loaded plain model into
its twin in place (weights kept, routers added).

The official gamma-MoD behaviour (`mod.compat: official`: fixed routable region, renumbered positions)
exists only for our LLaVA fork and is refused here.
"""

from __future__ import annotations

import inspect
import logging
import os
from typing import Any, ClassVar

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
)

from transformers.conversion_mapping import get_checkpoint_conversion_mapping, register_checkpoint_conversion_mapping

from ..mod.config import ModConfig, ModConfigError
from ..mod.convert import register_converter
from ..mod.layer import ModContextHolder, ModForwardContext, RoutingCounts, is_mod_layer, mod_layer_class
from ..mod.router import load_shared_router
from ..mod.strategies import build_strategy, prd_retention_for
from ..model.llava_llama import read_router_weights, unaliased_router_copies
from .base import FamilyAdapter
from .llava_hf import LLAVA_HF
from .llava_onevision import LLAVA_ONEVISION
from .qwen2_5_vl import QWEN2_5_VL
from .qwen3_vl import QWEN3_VL

logger = logging.getLogger(__name__)
# -- configs -------------------------------------------------------------------------------------
class ModFamilyConfigMixin:
    """The `mod` section on a family config (each concrete class declares the `mod` field)."""

    family: ClassVar[FamilyAdapter]

    def __post_init__(self, **kwargs) -> None:
        super().__post_init__(**kwargs)
        self.mod_config()  # a bad mod section is an error at load, not at forward

    def mod_config(self) -> ModConfig | None:
        mod = ModConfig.from_dict(self.mod)
        if mod is None:
            return None
        if mod.official:
            why = ("mod.compat 'official'" if mod.compat == "official"
                   else f"mod.mod_mode {mod.mod_mode!r} (official-only)")
            raise ModConfigError(
                f"{why}: the official gamma-MoD behaviour (fixed routable region, renumbered positions) exists only "
                f"for the LLaVA fork (llava_llama); {self.family.name} models route as 'ours' (use mod.compat 'ours', "
                "mod_mode 'sparse' or 'dense')")
        mod.validate_against(self.get_text_config(decoder=True).num_hidden_layers)
        return mod


class GammaModLlavaConfig(ModFamilyConfigMixin, LlavaConfig):
    model_type = LLAVA_HF.mod_model_type
    family = LLAVA_HF
    mod: dict | None = None


class GammaModLlavaOnevisionConfig(ModFamilyConfigMixin, LlavaOnevisionConfig):
    model_type = LLAVA_ONEVISION.mod_model_type
    family = LLAVA_ONEVISION
    mod: dict | None = None


class GammaModQwen2_5_VLConfig(ModFamilyConfigMixin, Qwen2_5_VLConfig):
    model_type = QWEN2_5_VL.mod_model_type
    family = QWEN2_5_VL
    mod: dict | None = None


class GammaModQwen3VLConfig(ModFamilyConfigMixin, Qwen3VLConfig):
    model_type = QWEN3_VL.mod_model_type
    family = QWEN3_VL
    mod: dict | None = None


# -- MoD layers inside a family model ---------------------------------------------------------------
def install_mod_layers(model: nn.Module, family: FamilyAdapter, mod: ModConfig, holder: ModContextHolder) -> None:
    """Replace the decoder layers at mod.mod_layers_idx by MoD layers of the same class carrying the same
    weights (every key of the dense layer must land in its MoD twin; the only new parameters are the router's)."""
    text_config = family.text_config(model.config)
    layers = family.decoder_layers(model)
    strategy = build_strategy(mod)
    if not mod.layer_skip_ratios:  # strategies with a per-layer schedule (p-MoD PRD) fill it
        mod.layer_skip_ratios = strategy.layer_skip_ratios(text_config.num_hidden_layers)
    shared = strategy.build_router(text_config.hidden_size) if mod.shared_router else None
    no_split = set(getattr(model, "_no_split_modules", None) or ())
    for i in mod.mod_layers_idx:
        dense = layers[i]
        if is_mod_layer(dense):
            raise ValueError(f"{family.name}: decoder layer {i} is already a MoD layer")
        reference = next(dense.parameters())
        router = shared if shared is not None else strategy.build_router(text_config.hidden_size)
        cls = mod_layer_class(type(dense))
        new = cls(text_config, i, mod, strategy, router, holder).to(device=reference.device, dtype=reference.dtype)
        result = new.load_state_dict(dense.state_dict(), strict=False)
        missing = [k for k in result.missing_keys if not k.startswith("router.")]
        if missing or result.unexpected_keys:
            raise RuntimeError(f"{family.name} layer {i}: weights do not map onto the MoD layer "
                               f"(missing {missing}, unexpected {list(result.unexpected_keys)})")
        new.train(dense.training)
        layers[i] = new
        no_split.add(cls.__name__)
    model._no_split_modules = no_split


# -- models ----------------------------------------------------------------------------------------
class ModFamilyModelMixin:
    """What the MoD twin adds to a family's ForConditionalGeneration (see the module docstring)."""

    family: ClassVar[FamilyAdapter]

    def __init__(self, config) -> None:
        super().__init__(config)
        self._setup_mod()

    def _setup_mod(self) -> None:
        self.mod_context_holder = ModContextHolder()
        self.last_routing_stats: RoutingCounts | dict = {}
        mod = self.config.mod_config()
        if mod is not None:
            install_mod_layers(self, self.family, mod, self.mod_context_holder)

    @property
    def mod_layer_indices(self) -> list[int]:
        return [i for i, layer in enumerate(self.family.decoder_layers(self)) if is_mod_layer(layer)]

    def mod_layers(self) -> list[nn.Module]:
        return [layer for layer in self.family.decoder_layers(self) if is_mod_layer(layer)]

    # -- forward ------------------------------------------------------------------------------
    def build_mod_context(
        self, input_ids: torch.Tensor | None, inputs_embeds: torch.Tensor | None, attention_mask: torch.Tensor | None,
        cache, mod_decode_start: int | None = None, routable_mask: torch.Tensor | None = None,
    ) -> ModForwardContext | None:
        """The routing inputs of one forward (None without MoD layers)."""
        mod_layers = self.mod_layers()
        if not mod_layers:
            return None
        ref = input_ids if input_ids is not None else inputs_embeds
        batch, length = ref.shape[:2]
        device = ref.device
        past = cache.get_seq_length() if cache is not None else 0  # layer 0 is dense: the full length
        step_mask = attention_mask[:, -length:] if attention_mask is not None and attention_mask.dim() == 2 else None
        if routable_mask is None:
            if input_ids is not None:
                media = self.family.media_token_ids(self.config)
                routable_mask = mod_layers[0].strategy.routable_mask(input_ids, step_mask, media)
            else:  # embeddings only: which positions hold media is unknown, so nothing is routable
                routable_mask = torch.zeros(batch, length, dtype=torch.bool, device=device)
        decode = None
        if mod_decode_start is not None:
            absolute = torch.arange(past, past + length, device=device)
            decode = (absolute >= mod_decode_start).unsqueeze(0).expand(batch, -1)
            if step_mask is not None:
                decode = decode & step_mask.bool()
        return ModForwardContext(routable=routable_mask.bool(), decode=decode, attention_mask=step_mask)

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        # generate() checks its kwargs against forward's signature: show the family's parameters plus ours.
        family_forward = super(ModFamilyModelMixin, cls).forward
        family_signature = inspect.signature(family_forward)
        params = [p for p in family_signature.parameters.values() if p.kind != p.VAR_KEYWORD]
        cls._family_forward_params = tuple(p.name for p in params[1:] if p.kind == p.POSITIONAL_OR_KEYWORD)
        ours = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None)
                for name in ("mod_decode_start", "routable_mask")]
        var_kw = [inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD)]

        def forward(self, *args, **kwargs):
            return ModFamilyModelMixin.forward(self, *args, **kwargs)

        forward.__signature__ = family_signature.replace(parameters=params + ours + var_kw)
        forward.__doc__ = ModFamilyModelMixin.forward.__doc__
        cls.forward = forward

    def forward(self, *args, mod_decode_start: int | None = None, routable_mask: torch.Tensor | None = None,
                **kwargs):
        """The family's forward (same arguments) with MoD routing; `mod_decode_start`: tokens at or past this
        index are generated tokens (generate() sets it); `routable_mask` (B, T): overrides the routable tokens."""
        if len(args) > len(self._family_forward_params):
            raise TypeError(f"{type(self).__name__}.forward takes at most {len(self._family_forward_params)} "
                            "positional arguments")
        kwargs.update(zip(self._family_forward_params, args))
        input_ids, attention_mask = kwargs.get("input_ids"), kwargs.get("attention_mask")
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        ctx = self.build_mod_context(input_ids, kwargs.get("inputs_embeds"), attention_mask, cache,
                                     mod_decode_start, routable_mask)
        self.mod_context_holder.context = ctx
        try:
            outputs = super().forward(**kwargs)
        finally:
            self.mod_context_holder.context = None  # MoD layers bound it when called
        routing_loss = None
        if ctx is not None:
            # {layer: (routable, skipped)}, read from the device only when someone looks.
            self.last_routing_stats = RoutingCounts(ctx.stats)
            routing_loss = ctx.routing_loss()
        outputs.routing_loss = routing_loss
        outputs.lm_loss = outputs.loss
        if outputs.loss is not None and routing_loss is not None:
            coef = self.config.mod_config().router_aux_loss_coef
            outputs.loss = outputs.loss + coef * routing_loss.to(outputs.loss.dtype)
        return outputs

    def generate(self, inputs=None, **kwargs):
        input_ids = inputs if inputs is not None else kwargs.get("input_ids")
        if input_ids is not None and self.mod_layer_indices and "mod_decode_start" not in kwargs:
            # Tokens at or past this index are "decode" tokens for the MoD decode rule, with or without cache.
            kwargs["mod_decode_start"] = input_ids.shape[1]
        return super().generate(inputs, **kwargs)

    # -- weights ------------------------------------------------------------------------------
    def save_pretrained(self, save_directory, *args, state_dict: dict | None = None, **kwargs):
        """Every MoD layer's router under its own `...layers.{i}.router.*` key; shared copies are cloned
        (safetensors refuses aliased tensors)."""
        state_dict = unaliased_router_copies(self.state_dict() if state_dict is None else state_dict)
        return super().save_pretrained(save_directory, *args, state_dict=state_dict, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        model = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        if isinstance(model, ModFamilyModelMixin) and os.path.isdir(str(pretrained_model_name_or_path)):
            model.tie_router_copies(read_router_weights(str(pretrained_model_name_or_path)))
        return model

    def tie_router_copies(self, router_weights: dict[str, torch.Tensor]) -> None:
        """A shared router loads from the lowest MoD layer's copy; differing copies are warned about."""
        mod = self.config.mod_config()
        if mod is None or not mod.shared_router or not router_weights:
            return
        load_shared_router(self.mod_layers()[0].router, router_weights)


class GammaModLlavaForConditionalGeneration(ModFamilyModelMixin, LlavaForConditionalGeneration):
    config_class = GammaModLlavaConfig
    family = LLAVA_HF


class GammaModLlavaOnevisionForConditionalGeneration(ModFamilyModelMixin, LlavaOnevisionForConditionalGeneration):
    config_class = GammaModLlavaOnevisionConfig
    family = LLAVA_ONEVISION


class GammaModQwen2_5_VLForConditionalGeneration(ModFamilyModelMixin, Qwen2_5_VLForConditionalGeneration):
    config_class = GammaModQwen2_5_VLConfig
    family = QWEN2_5_VL


class GammaModQwen3VLForConditionalGeneration(ModFamilyModelMixin, Qwen3VLForConditionalGeneration):
    config_class = GammaModQwen3VLConfig
    family = QWEN3_VL


# family name -> (MoD config class, MoD model class)
_TWINS: dict[str, tuple[type, type]] = {
    LLAVA_HF.name: (GammaModLlavaConfig, GammaModLlavaForConditionalGeneration),
    LLAVA_ONEVISION.name: (GammaModLlavaOnevisionConfig, GammaModLlavaOnevisionForConditionalGeneration),
    QWEN2_5_VL.name: (GammaModQwen2_5_VLConfig, GammaModQwen2_5_VLForConditionalGeneration),
    QWEN3_VL.name: (GammaModQwen3VLConfig, GammaModQwen3VLForConditionalGeneration),
}

def _register_key_mappings(config_class: type, model_class: type) -> None:
    """Give the twin the checkpoint key mappings transformers applies to the plain family (keyed by class
    name or model_type; e.g. Qwen2.5-VL folders store `model.layers.*` for `model.language_model.layers.*`),
    so that a twin saves the family's own layout and loads it back."""
    family = config_class.family
    pairs = [(model_class.__name__, family.hf_model_class_name)]
    pairs += [(config_class.model_type, plain) for plain in family.hf_model_types]
    for ours, plain in pairs:
        mapping = get_checkpoint_conversion_mapping(plain)
        if mapping is not None and get_checkpoint_conversion_mapping(ours) is None:
            register_checkpoint_conversion_mapping(ours, mapping)


for _config_class, _model_class in _TWINS.values():
    _register_key_mappings(_config_class, _model_class)
    AutoConfig.register(_config_class.model_type, _config_class, exist_ok=True)
    AutoModelForImageTextToText.register(_config_class, _model_class, exist_ok=True)
    AutoModelForCausalLM.register(_config_class, _model_class, exist_ok=True)
    # transformers renames legacy checkpoint keys by class name / model_type ("model.layers" <-> Qwen2.5-VL's
    # "model.language_model.layers") and saves a model loaded that way under the legacy names again: a plain
    # model loaded, converted and saved must load as its twin, so the twin gets the family's renamings.
    _family = _config_class.family
    for _own, _theirs in ((_model_class.__name__, _family.hf_model_class_name),
                          (_config_class.model_type, _family.hf_model_types[0])):
        _mapping = get_checkpoint_conversion_mapping(_theirs)
        if _mapping is not None:
            register_checkpoint_conversion_mapping(_own, _mapping, overwrite=True)


def mod_twin_classes(family: FamilyAdapter | str) -> tuple[type, type]:
    """(config class, model class) of a Hugging Face family's MoD twin."""
    name = family.name if isinstance(family, FamilyAdapter) else family
    if name not in _TWINS:
        raise ValueError(f"family {name!r} has no MoD twin (families with one: {', '.join(_TWINS)}); "
                         "our LLaVA fork carries its MoD layers in LlavaLlamaForCausalLM itself")
    return _TWINS[name]


def is_mod_family_model(model: Any) -> bool:
    return isinstance(model, ModFamilyModelMixin)


def _family_of_plain_model(model: Any) -> FamilyAdapter | None:
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    for family in (LLAVA_HF, LLAVA_ONEVISION, QWEN2_5_VL, QWEN3_VL):
        if model_type in family.model_types:
            return family
    return None


# -- conversion ------------------------------------------------------------------------------------
def convert_family_to_mod(
    model: nn.Module,
    layers: list[int] | None = None,
    skip_ratio: float = 0.5,
    router_aux_loss_coef: float = 0.01,
    **mod_options: Any,
) -> nn.Module:
    """Turn a loaded plain family model (e.g. Qwen2_5_VLForConditionalGeneration) into its MoD twin, in place.

    The layers in `layers` become MoD layers with the same weights (every key asserted) plus a router;
    `skip_ratio` is the fraction of routable tokens skipped. With
    strategy="pmod", `layers=None` lets the PRD schedule pick the MoD layers. Returns the same object,
    now of the twin class, with its config (of the twin config class) carrying the `mod` section, so
    `save_pretrained` / `from_pretrained` rebuild the same model. The object is re-classed rather than
    rebuilt so that no weight is copied (a 7B model would need twice its memory); both twin classes
    only add methods, and the sub-configs the submodules hold stay the same objects.
    """
    family = _family_of_plain_model(model)
    if family is None:
        raise ValueError(f"{type(model).__name__} (model_type {getattr(model.config, 'model_type', None)!r}) is not "
                         "a Hugging Face family model gamma-mod converts")
    if is_mod_family_model(model) and model.mod_layer_indices:
        raise ValueError(f"model already has MoD layers {model.mod_layer_indices}; convert a dense model")
    config = model.config
    n_layers = family.text_config(config).num_hidden_layers
    if layers is None:
        if mod_options.get("strategy") != "pmod":
            raise ValueError("convert_to_mod needs `layers` (e.g. from select_mod_layers on an ARank vector); "
                             "only strategy='pmod' picks them itself (progressive ratio decay)")
        probe = ModConfig(strategy="pmod", **{k: v for k, v in mod_options.items() if k.startswith("prd_")})
        layers = [i for i in prd_retention_for(probe, n_layers) if i != 0]  # layer 0 stays dense
    mod = ModConfig(mod_layers_idx=list(layers), skip_ratio=skip_ratio, router_aux_loss_coef=router_aux_loss_coef,
                    **mod_options)
    mod.validate_against(n_layers)
    config_class, model_class = mod_twin_classes(family)
    plain_config_class = type(config)
    config.__class__ = config_class
    config.mod = mod.to_dict()
    try:
        config.mod_config()  # refuses the official mode with the reason
    except ModConfigError:
        config.__class__ = plain_config_class
        del config.mod
        raise
    model.__class__ = model_class
    model._setup_mod()
    # The strategy may fill per-layer ratios (p-MoD PRD): keep what the layers use.
    config.mod = model.mod_layers()[0].mod.to_dict() if mod.mod_layers_idx else config.mod
    logger.info("converted %d of %d %s decoder layers to MoD (skip ratio %.2f): %s",
                len(model.mod_layer_indices), n_layers, family.name, skip_ratio, mod.mod_layers_idx)
    return model


register_converter(lambda model: _family_of_plain_model(model) is not None, convert_family_to_mod)


def auto_model_class(config) -> type:
    """The Auto class that loads a folder of this config: AutoModelForCausalLM for our fork, else
    AutoModelForImageTextToText."""
    from . import get_family

    return AutoModelForCausalLM if get_family(config).name == "llava_fork" else AutoModelForImageTextToText


def load_family_model(folder: str | os.PathLike, **kwargs: Any) -> nn.Module:
    """A model folder in Hugging Face format (a plain family model, its MoD twin, or our fork) from local
    files only (never the Hub): the family's Auto class, no trust_remote_code."""
    config = kwargs.pop("config", None) or AutoConfig.from_pretrained(str(folder), local_files_only=True)
    return auto_model_class(config).from_pretrained(str(folder), config=config, local_files_only=True, **kwargs)
