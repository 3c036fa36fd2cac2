"""Image files opened for a record: full decode to RGB, or a cheap header check; errors name the file and record."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, UnidentifiedImageError

from .formats import DataError


def open_image(path: Path, rid: str | None = None) -> Image.Image:
    """The image as RGB, fully decoded (a truncated file fails here, not in the collator)."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except FileNotFoundError:
        raise DataError(f"image file {path} not found", "missing image", record_id=rid) from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise DataError(f"image file {path} is corrupt or not an image ({e})", "corrupt image",
                        record_id=rid) from None


def check_image(path: Path, rid: str | None = None) -> None:
    """Cheap init-time check (header + PIL's verify, no full decode): 665K images must not take an hour."""
    try:
        with Image.open(path) as img:
            img.verify()
    except FileNotFoundError:
        raise DataError(f"image file {path} not found", "missing image", record_id=rid) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"image file {path} is corrupt or not an image ({e})", "corrupt image",
                        record_id=rid) from None
