"""LLaVA-style model: vision tower -> projector -> Llama decoder with optional MoD layers.

Key names follow LLaVA (`model.vision_tower.vision_tower.vision_model.*`, `model.mm_projector.*`,
`model.layers.{i}.*`, `lm_head.*`) and gamma-MoD (`model.layers.{i}.router.weight`). Image
features replace the `<image>` placeholder tokens in place: the data pipeline expands one
`<image>` into `num_image_tokens` copies, so sequence length, labels and masks never change
inside the model (no LLaVA-style re-padding).
"""

from __future__ import annotations

import glob
import json
import logging
import os
import warnings
from dataclasses import dataclass

import torch
from torch import nn
from transformers import LlamaModel, LlamaForCausalLM
from transformers import initialization as init
from transformers.cache_utils import DynamicCache
from transformers.masking_utils import create_causal_mask
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.models.llama.modeling_llama import LlamaDecoderLayer

from ..mod.layer import ModForwardContext, MoDDecoderLayer, RoutingCounts
from ..mod.router import TokenRouter, ZeroInitLinear, gathered_for_write, load_shared_router  # noqa: F401
from ..mod.strategies import build_strategy
from ..prune import TokenPruner
from ..prune.session import PruneSession
from .configuration import LlavaLlamaConfig, ModLlavaLlamaConfig
from .projector import build_projector
from .vision.factory import build_vision_tower, owning_submodel

ROUTER_KEY_SUFFIX = ".router.weight"
logger = logging.getLogger(__name__)


def is_router_key(key: str) -> bool:
    """gamma-MoD `model.layers.{i}.router.weight`; p-MoD `model.layers.{i}.router.router.{weight,bias}`."""
    return ".router." in key


@dataclass
class GammaModelOutput(BaseModelOutputWithPast):
    mod_context: ModForwardContext | None = None


@dataclass
class GammaCausalLMOutput(CausalLMOutputWithPast):
    lm_loss: torch.FloatTensor | None = None
    routing_loss: torch.FloatTensor | None = None


def build_decoder_layers(config: LlavaLlamaConfig) -> nn.ModuleList:
    """Dense Llama layers, with MoD layers at `config.mod.mod_layers_idx` (one shared router by default)."""
    mod = config.mod_config()
    if mod is None:
        return nn.ModuleList(LlamaDecoderLayer(config, i) for i in range(config.num_hidden_layers))
    if mod.official:
        why = f"mod.mod_mode {mod.mod_mode!r} is an official gamma-MoD value" if mod.auto_official else "mod.compat"
        logger.info("MoD layers %s follow the official gamma-MoD code (%s layout, routable region %d, skip ratio "
                    "%.1f; %s); set mod.compat to 'ours' for our default", mod.mod_layers_idx, mod.official_layout,
                    mod.region, mod.layer_skip_ratio(0), why)
        if mod.skip_ratio != mod.layer_skip_ratio(0):
            logger.warning("mod.skip_ratio (official capacity_factor) %s is not used in official compat mode: the "
                           "official code skips a fixed %.1f of the routable region in training", mod.skip_ratio,
                           mod.layer_skip_ratio(0))
    strategy = build_strategy(mod)
    if not mod.layer_skip_ratios:
        # Strategies with a per-layer schedule (p-MoD PRD) fill it; gamma uses skip_ratio everywhere.
        mod.layer_skip_ratios = strategy.layer_skip_ratios(config.num_hidden_layers)
    shared = strategy.build_router(config.hidden_size) if mod.shared_router else None
    layers = []
    for i in range(config.num_hidden_layers):
        if i in mod.mod_layers_idx:
            router = shared if shared is not None else strategy.build_router(config.hidden_size)
            layers.append(MoDDecoderLayer(config, i, mod, strategy, router))
        else:
            layers.append(LlamaDecoderLayer(config, i))
    return nn.ModuleList(layers)


class GammaLlamaModel(LlamaModel):
    """LlamaModel + LLaVA vision tower/projector + MoD layers; one readable forward, no patching."""

    config_class = LlavaLlamaConfig

    def __init__(self, config: LlavaLlamaConfig) -> None:
        super().__init__(config)
        self.layers = build_decoder_layers(config)
        vision_tower = build_vision_tower(config)  # CLIP, LLaVA-HR or Mini-Gemini (config.vision_tower_type)
        if vision_tower is not None:
            self.vision_tower = vision_tower
            self.mm_projector = build_projector(config.mm_projector_type, config.mm_hidden_size, config.hidden_size)
        self.pruner: TokenPruner | None = config.prune_config()  # inference-time token pruner (gamma_mod.prune)
        self.last_prune_stats = None
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        # Modules inside this model are initialised by THIS method (transformers dispatches per sub-model).
        if isinstance(module, ZeroInitLinear):  # p-MoD router: weight and bias start at 0
            init.zeros_(module.weight)
            init.zeros_(module.bias)
            return
        super()._init_weights(module)

    @property
    def mod_layer_indices(self) -> list[int]:
        return [i for i, layer in enumerate(self.layers) if isinstance(layer, MoDDecoderLayer)]

    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, num_image_tokens, hidden) in the decoder's embedding space."""
        return self.mm_projector(self.vision_tower(pixel_values))

    def embed_inputs(self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None) -> torch.Tensor:
        image_token = self.config.image_token_index
        is_image = input_ids == image_token if image_token is not None else torch.zeros_like(input_ids, dtype=torch.bool)
        embeds = self.embed_tokens(input_ids.masked_fill(is_image, 0))  # (B, T, C)
        n_image_tokens = int(is_image.sum())
        if n_image_tokens == 0:
            return embeds
        if pixel_values is None:
            raise ValueError(f"input_ids hold {n_image_tokens} image tokens but no pixel_values were given")
        features = self.encode_images(pixel_values).to(embeds.dtype).reshape(-1, embeds.shape[-1])
        if features.shape[0] != n_image_tokens:
            raise ValueError(
                f"{n_image_tokens} image tokens in input_ids but the images give {features.shape[0]} features "
                f"({pixel_values.shape[0]} images x {self.vision_tower.num_image_tokens})"
            )
        return embeds.masked_scatter(is_image.unsqueeze(-1), features)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache=None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        pixel_values: torch.Tensor | None = None,
        mod_decode_start: int | None = None,
        routable_mask: torch.Tensor | None = None,
        mod_labels: torch.Tensor | None = None,
        **kwargs,
    ) -> GammaModelOutput:
        if cache is None:
            cache = kwargs.pop("past_key_values", None)
        kwargs.pop("past_key_values", None)
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.embed_inputs(input_ids, pixel_values)
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        batch, length = inputs_embeds.shape[:2]
        past = cache.get_seq_length() if cache is not None else 0
        if position_ids is None:
            if attention_mask is not None and attention_mask.dim() == 2:
                # Left padding: real tokens count from 0; identical to arange when there is no padding.
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -length:]
            else:
                position_ids = torch.arange(past, past + length, device=inputs_embeds.device).unsqueeze(0)
        causal_mask = create_causal_mask(
            config=self.config, inputs_embeds=inputs_embeds, attention_mask=attention_mask,
            cache=cache, position_ids=position_ids,
        )
        position_embeddings = self.rotary_emb(inputs_embeds, position_ids=position_ids)

        mod_context = None
        if self.mod_layer_indices:
            step_mask = attention_mask[:, -length:] if attention_mask is not None and attention_mask.dim() == 2 else None
            if routable_mask is None:
                if input_ids is not None and self.config.image_token_index is not None:
                    strategy = self.layers[self.mod_layer_indices[0]].strategy
                    routable_mask = strategy.routable_mask(input_ids, step_mask, self.config.image_token_index)
                else:
                    routable_mask = torch.zeros(batch, length, dtype=torch.bool, device=inputs_embeds.device)
            decode = None
            if mod_decode_start is not None:
                absolute = torch.arange(past, past + length, device=inputs_embeds.device)
                decode = (absolute >= mod_decode_start).unsqueeze(0).expand(batch, -1)
                if step_mask is not None:
                    decode = decode & step_mask.bool()
            mod_context = ModForwardContext(routable=routable_mask.bool(), decode=decode, attention_mask=step_mask,
                                            rotary=self.rotary_emb, position_ids=position_ids, labels=mod_labels)

        hidden = inputs_embeds
        pruning = None
        if self.pruner is not None:
            pruning = PruneSession.start(
                self.pruner, hidden=hidden, input_ids=input_ids, image_token=self.config.image_token_index,
                step_mask=attention_mask[:, -length:] if attention_mask is not None and attention_mask.dim() == 2 else None,
                past=past, decode_start=mod_decode_start, labels=mod_labels, cache=cache,
                attn_implementation=self.config._attn_implementation)
        for i, layer in enumerate(self.layers):
            extra = {"mod_context": mod_context} if isinstance(layer, MoDDecoderLayer) else {}
            layer_kwargs = dict(attention_mask=causal_mask, position_embeddings=position_embeddings,
                                position_ids=position_ids, **extra)
            if pruning is not None:  # drops image tokens between layers (gamma_mod/prune/session.py)
                hidden, layer_kwargs = pruning.before_layer(i, layer, hidden, layer_kwargs)
            hidden = layer(hidden, cache=cache, use_cache=use_cache, **layer_kwargs, **kwargs)
        if pruning is not None:
            hidden = pruning.finish(hidden)
        self.last_prune_stats = pruning.stats if pruning is not None else None
        hidden = self.norm(hidden)
        return GammaModelOutput(last_hidden_state=hidden, cache=cache, mod_context=mod_context)


class LlavaLlamaForCausalLM(LlamaForCausalLM):
    config_class = LlavaLlamaConfig
    _no_split_modules = ["LlamaDecoderLayer", "MoDDecoderLayer", "CLIPEncoderLayer"]

    def __init__(self, config: LlavaLlamaConfig) -> None:
        super().__init__(config)
        self.model = GammaLlamaModel(config)
        self.last_routing_stats: dict = {}
        self.post_init()

    # -- weights ------------------------------------------------------------------------------
    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, TokenRouter):
            if module.zero_init:
                init.zeros_(module.weight)
            else:
                init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
            return
        if type(module).__module__.startswith(("transformers.models.clip", "transformers.models.convnext")):
            owner = owning_submodel(self.model.vision_tower, module)  # the tower's CLIP / ConvNext model
            if owner is not None:
                owner._init_weights(module)
                return
        super()._init_weights(module)

    def save_pretrained(self, save_directory, *args, state_dict: dict | None = None, **kwargs):
        """Write every MoD layer's router as its own `model.layers.{i}.router.weight` (the released
        checkpoints' layout); safetensors refuses aliased tensors, so shared copies are cloned."""
        state_dict = unaliased_router_copies(self.state_dict() if state_dict is None else state_dict)
        return super().save_pretrained(save_directory, *args, state_dict=state_dict, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        model = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        if isinstance(model, LlavaLlamaForCausalLM) and os.path.isdir(str(pretrained_model_name_or_path)):
            router_weights = read_router_weights(str(pretrained_model_name_or_path))
            foreign = sorted(set(router_weights) - {k for k in model.state_dict() if is_router_key(k)})
            if foreign:
                # e.g. a p-MoD folder from before the official Linear(hidden, 1, bias) router: nothing would load.
                mod = model.config.mod_config()
                raise ValueError(f"{pretrained_model_name_or_path}: router tensors {foreign[:2]} ({len(foreign)} in all) "
                                 f"do not belong to this model's {mod.strategy if mod else 'dense'} layers")
            model.tie_router_copies(router_weights)
        return model

    def tie_router_copies(self, router_weights: dict[str, torch.Tensor]) -> None:
        """A shared router loads from the lowest MoD layer's copy; differing copies are warned about."""
        mod = self.config.mod_config()
        if mod is None or not mod.shared_router or not router_weights:
            return
        load_shared_router(self.model.layers[self.model.mod_layer_indices[0]].router, router_weights)

    def set_pruner(self, spec: str | dict | TokenPruner | None) -> None:
        """Switch the inference-time token pruner ("fastv:K=2,R=0.5", a dict, a pruner, or None); the
        config's `prune` follows, so save_pretrained keeps it."""
        self.config.set_prune(spec.to_dict() if isinstance(spec, TokenPruner) else spec)
        self.model.pruner = self.config.prune_config()

    # -- forward ------------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache=None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        pixel_values: torch.Tensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        mod_decode_start: int | None = None,
        **kwargs,
    ) -> GammaCausalLMOutput:
        if cache is None:
            cache = kwargs.pop("past_key_values", None)
        kwargs.pop("past_key_values", None)
        outputs = self.model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, cache=cache,
            inputs_embeds=inputs_embeds, use_cache=use_cache, pixel_values=pixel_values,
            mod_decode_start=mod_decode_start, mod_labels=labels, **kwargs,
        )
        hidden = outputs.last_hidden_state
        if isinstance(logits_to_keep, int) and logits_to_keep > 0:
            hidden = hidden[:, -logits_to_keep:]
        logits = self.lm_head(hidden)

        loss = lm_loss = routing_loss = None
        ctx = outputs.mod_context
        if ctx is not None:
            # {layer: (routable, skipped)}, read from the device only when someone looks.
            self.last_routing_stats = RoutingCounts(ctx.stats)
            routing_loss = ctx.routing_loss()
        if labels is not None:
            lm_loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)
            loss = lm_loss
            if routing_loss is not None:
                coef = self.config.mod_config().router_aux_loss_coef
                loss = lm_loss + coef * routing_loss.to(lm_loss.dtype)
        return GammaCausalLMOutput(
            loss=loss, logits=logits, cache=outputs.cache,
            lm_loss=lm_loss, routing_loss=routing_loss,
        )

    # -- generation ---------------------------------------------------------------------------
    def prepare_inputs_for_generation(self, input_ids, *args, pixel_values=None, **kwargs):
        inputs = super().prepare_inputs_for_generation(input_ids, *args, **kwargs)
        step_ids = inputs.get("input_ids")
        image_token = self.config.image_token_index
        # Images are encoded only in a step whose inputs still contain image tokens (the prefill,
        # or every step when generating without a cache).
        if pixel_values is not None and step_ids is not None and image_token is not None and (step_ids == image_token).any():
            inputs["pixel_values"] = pixel_values
        return inputs

    def generate(self, inputs=None, **kwargs):
        input_ids = inputs if inputs is not None else kwargs.get("input_ids")
        needs_start = self.model.mod_layer_indices or self.model.pruner is not None
        if input_ids is not None and needs_start and "mod_decode_start" not in kwargs:
            # Tokens at or past this index are "decode" tokens for the MoD decode rule, with or without cache.
            kwargs["mod_decode_start"] = input_ids.shape[1]
        return super().generate(inputs, **kwargs)


class ModLlavaLlamaForCausalLM(LlavaLlamaForCausalLM):
    """Entry for configs with the official `model_type: mod_llava_llama`."""

    config_class = ModLlavaLlamaConfig


def unaliased_router_copies(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A shared router appears under every MoD layer's `...router.*` key; safetensors refuses aliased tensors,
    so each copy is cloned (the released checkpoints' layout: one router per layer)."""
    return {k: (v.clone() if is_router_key(k) else v) for k, v in state_dict.items()}


def read_router_weights(folder: str) -> dict[str, torch.Tensor]:
    """Every router tensor (`is_router_key`) stored in a checkpoint folder (safetensors or torch .bin shards)."""
    from safetensors import safe_open

    out: dict[str, torch.Tensor] = {}
    for path in sorted(glob.glob(os.path.join(folder, "*.safetensors"))):
        with safe_open(path, framework="pt") as f:
            for key in f.keys():
                if is_router_key(key):
                    out[key] = f.get_tensor(key)
    if not out:
        for path in sorted(glob.glob(os.path.join(folder, "pytorch_model*.bin"))):
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            out.update({k: v.clone() for k, v in state.items() if is_router_key(k)})
    return out
