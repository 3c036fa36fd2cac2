from .config import ModConfig
from .layer import MoDDecoderLayer, ModForwardContext
from .router import TokenRouter
from .routing import routable_token_mask, topk_keep_mask

__all__ = ["ModConfig", "MoDDecoderLayer", "ModForwardContext", "TokenRouter", "routable_token_mask", "topk_keep_mask"]
