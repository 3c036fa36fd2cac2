from .configuration import LlavaLlamaConfig, ModLlavaLlamaConfig
from .llava_llama import GammaLlamaModel, LlavaLlamaForCausalLM, ModLlavaLlamaForCausalLM

__all__ = [
    "GammaLlamaModel",
    "LlavaLlamaConfig",
    "LlavaLlamaForCausalLM",
    "ModLlavaLlamaConfig",
    "ModLlavaLlamaForCausalLM",
]
