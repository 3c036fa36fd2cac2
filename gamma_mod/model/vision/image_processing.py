"""Image preprocessing for CLIP-style towers with PIL only (no torchvision).

LLaVA-1.5's "pad" aspect mode: pad to a square with the mean colour, resize (bicubic), scale to
[0, 1] and normalise with the tower's mean/std. "square" (the official train.py default, LLaVA-HR
stage 1): CLIPImageProcessor's own path, shortest side resized to S (bicubic) then the centre S x S crop.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image


@dataclass
class ImageProcessor:
    image_size: int
    image_mean: tuple[float, ...]
    image_std: tuple[float, ...]
    aspect_ratio: str = "pad"

    @classmethod
    def from_model_config(cls, config) -> "ImageProcessor":
        return cls(
            # The tower's input resolution: CLIP's image_size, or the high-resolution input of
            # LLaVA-HR (1024) / Mini-Gemini-HD (1536).
            image_size=config.image_input_size,
            image_mean=tuple(config.image_mean),
            image_std=tuple(config.image_std),
            aspect_ratio=config.image_aspect_ratio,
        )

    def pad_to_square(self, image: Image.Image) -> Image.Image:
        width, height = image.size
        if width == height:
            return image
        side = max(width, height)
        fill = tuple(int(m * 255) for m in self.image_mean)
        canvas = Image.new("RGB", (side, side), fill)
        canvas.paste(image, ((side - width) // 2, (side - height) // 2))
        return canvas

    def resize_and_center_crop(self, image: Image.Image) -> Image.Image:
        """Shortest side -> S (the long side truncated, as transformers does), then the centre S x S."""
        width, height = image.size
        side = self.image_size
        if width <= height:
            size = (side, int(side * height / width))
        else:
            size = (int(side * width / height), side)
        image = image.resize(size, Image.Resampling.BICUBIC)
        left, top = (size[0] - side) // 2, (size[1] - side) // 2
        return image.crop((left, top, left + side, top + side))

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """PIL image -> (3, S, S) float tensor."""
        image = image.convert("RGB")
        if self.aspect_ratio == "pad":
            image = self.pad_to_square(image)
        elif self.aspect_ratio == "square":
            image = self.resize_and_center_crop(image)
        image = image.resize((self.image_size, self.image_size), Image.Resampling.BICUBIC)
        data = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
        pixels = data.view(self.image_size, self.image_size, 3).permute(2, 0, 1).float() / 255.0
        mean = torch.tensor(self.image_mean).view(3, 1, 1)
        std = torch.tensor(self.image_std).view(3, 1, 1)
        return (pixels - mean) / std

    def batch(self, images: list[Image.Image]) -> torch.Tensor:
        return torch.stack([self(img) for img in images])
