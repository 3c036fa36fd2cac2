from .clip import CLIPVisionTower
from .image_processing import ImageProcessor

__all__ = ["CLIPVisionTower", "ImageProcessor"]
