"""FamilyAdapter: everything gamma-mod must know about one model family, in one small record.

A family is a multimodal model whose language model is a stack of decoder layers with the usual
parts (`input_layernorm`, `self_attn`, `post_attention_layernorm`, `mlp`). MoD wraps those layers
(gamma_mod/mod/layer.py); what differs per family is only where things live and what the special
tokens are:

    decoder layers     dotted path from the top model ("model.language_model.layers")
    text config        where hidden_size / num_hidden_layers live (config.get_text_config())
    image/video ids    the config fields holding the placeholder token ids
    vision/projector   dotted paths of the vision encoder (frozen by the stage 1/2 recipes) and of
                       the projector/merger (trained in stage 1); a path may name a module or a
                       parameter (LLaVA-OneVision's `image_newline`)

Adding a family = one adapter module + its registration in gamma_mod/families/__init__.py (+ a MoD
twin in modeling.py for Hugging Face families) + tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from torch import nn


def resolve_path(root: nn.Module, path: str):
    """`root.a.b.c` for "a.b.c": a submodule or a parameter; AttributeError names the missing part."""
    obj = root
    for part in path.split("."):
        if not hasattr(obj, part):
            raise AttributeError(f"{type(root).__name__} has no {path!r} (missing {part!r})")
        obj = getattr(obj, part)
    return obj


@dataclass(frozen=True)
class FamilyAdapter:
    name: str  # "llava_fork" | "llava_hf" | "llava_onevision" | "qwen2_5_vl" | "qwen3_vl"
    hf_model_types: tuple[str, ...]  # config.model_type of the plain model ("qwen2_5_vl")
    mod_model_type: str | None  # model_type of our MoD twin ("gamma_mod_qwen2_5_vl"); None for llava_fork
    decoder_layers_path: str  # dotted path of the LLM's decoder layers (nn.ModuleList)
    image_token_fields: tuple[str, ...]  # config fields holding image placeholder token ids
    video_token_fields: tuple[str, ...] = ()  # () when the family has no video input
    vision_modules: tuple[str, ...] = ()  # dotted paths of the vision encoder
    projector_modules: tuple[str, ...] = ()  # dotted paths of the projector / merger
    # transformers class of the plain model (None: ours, gamma_mod.model)
    hf_model_class_name: str | None = None
    # transformers processor class name the processing module builds for this family
    hf_processor_class_name: str | None = None

    @property
    def model_types(self) -> tuple[str, ...]:
        """Every config.model_type this family answers to (plain and MoD twin)."""
        return self.hf_model_types + ((self.mod_model_type,) if self.mod_model_type else ())

    @property
    def has_video(self) -> bool:
        return bool(self.video_token_fields)

    def text_config(self, config):
        """The config holding hidden_size / num_hidden_layers (the text sub-config of a VLM)."""
        return config.get_text_config(decoder=True)

    def decoder_layers(self, model: nn.Module) -> nn.ModuleList:
        return resolve_path(model, self.decoder_layers_path)

    def language_model(self, model: nn.Module) -> nn.Module:
        """The module that owns the decoder layers (its forward loops over them)."""
        return resolve_path(model, self.decoder_layers_path.rsplit(".", 1)[0])

    def _token_ids(self, config, fields: tuple[str, ...]) -> tuple[int, ...]:
        ids = []
        for name in fields:
            value = getattr(config, name, None)
            if value is None:
                raise ValueError(f"{self.name} config ({config.model_type}) has no `{name}` token id")
            ids.append(int(value))
        return tuple(ids)

    def image_token_ids(self, config) -> tuple[int, ...]:
        return self._token_ids(config, self.image_token_fields)

    def video_token_ids(self, config) -> tuple[int, ...]:
        return self._token_ids(config, self.video_token_fields)

    def media_token_ids(self, config) -> tuple[int, ...]:
        """Image and video placeholder ids: the tokens (with the system prompt before them) MoD may skip."""
        return self.image_token_ids(config) + self.video_token_ids(config)

    def _parameters(self, model: nn.Module, paths: tuple[str, ...]) -> Iterator[nn.Parameter]:
        for path in paths:
            obj = resolve_path(model, path)
            if isinstance(obj, nn.Parameter):
                yield obj
            else:
                yield from obj.parameters()

    def vision_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        """Parameters of the vision encoder, projector excluded where it sits inside it (Qwen's merger)."""
        projector = {id(p) for p in self.projector_parameters(model)}
        return [p for p in self._parameters(model, self.vision_modules) if id(p) not in projector]

    def projector_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        return list(self._parameters(model, self.projector_modules))

    def hf_model_class(self):
        """The transformers class of the plain model (None for our fork)."""
        if self.hf_model_class_name is None:
            return None
        import transformers

        return getattr(transformers, self.hf_model_class_name)
