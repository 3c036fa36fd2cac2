from .config import ModConfig
from .layer import MoDDecoderLayer, MoDLayerMixin, ModContextHolder, ModForwardContext, is_mod_layer, mod_layer_class
from .router import TokenRouter
from .routing import routable_token_mask, topk_keep_mask

__all__ = ["ModConfig", "ModContextHolder", "MoDDecoderLayer", "MoDLayerMixin", "ModForwardContext", "TokenRouter",
           "is_mod_layer", "mod_layer_class", "routable_token_mask", "topk_keep_mask"]
