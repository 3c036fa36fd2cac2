"""gamma-mod: Mixture-of-Depths adaptation of LLaVA-style multimodal LLMs.

Importing the package registers our configs/models with transformers' Auto classes, so
`AutoModelForCausalLM.from_pretrained(folder)` works without `trust_remote_code` (the MoD twins of
the Hugging Face families, gamma_mod/families, also with AutoModelForImageTextToText). Optional
extras (flash-attn, timm, open_clip, matplotlib) are never imported here.
"""

from transformers import AutoConfig, AutoModelForCausalLM

from .model import LlavaLlamaConfig, LlavaLlamaForCausalLM, ModLlavaLlamaConfig, ModLlavaLlamaForCausalLM
from .model import checkpoints as _checkpoints  # noqa: F401  (registers mod_mgm with the Auto classes)
from . import families as _families  # noqa: F401  (registers the MoD twins of the Hugging Face families)

__version__ = "0.1.0"

for _config, _model in ((LlavaLlamaConfig, LlavaLlamaForCausalLM), (ModLlavaLlamaConfig, ModLlavaLlamaForCausalLM)):
    AutoConfig.register(_config.model_type, _config, exist_ok=True)
    AutoModelForCausalLM.register(_config, _model, exist_ok=True)

__all__ = ["LlavaLlamaConfig", "LlavaLlamaForCausalLM", "ModLlavaLlamaConfig", "ModLlavaLlamaForCausalLM", "__version__"]
