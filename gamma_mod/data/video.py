"""Video frames for the model families that take video (Qwen2.5-VL, Qwen3-VL, LLaVA-OneVision).

`load_video_frames(source, num_frames=None)` returns one clip as `(T, H, W, 3)` uint8 RGB, from

    a folder of frame images   sorted by name, digit runs compared as numbers ("f2" < "f10"); opened with PIL
    a `.npy` file              an array as below
    a numpy array / torch tensor
                               (T, H, W, 3) uint8, or (T, 3, H, W) floating point in [0, 1] (scaled by 255 and
                               rounded); either layout in either dtype when the shape says which it is

`num_frames` picks that many frames uniformly: `sample_indices(total, n)` = round(linspace(0, total - 1, n)),
the rule of qwen-vl-utils (QwenLM/Qwen2.5-VL qwen-vl-utils/src/qwen_vl_utils/vision_process.py,
`torch.linspace(0, total_frames - 1, nframes).round()`; rounding half to even, like torch.round). The first
and last frame are always kept. Like qwen-vl-utils it refuses more frames than the clip has, instead of
repeating frames.

Deliberately no video decoder: mp4/avi/... need PyAV, decord or torchvision, none of which is in the core
install (torchvision breaks CLIP/peft imports here). Extract frames first, e.g.
`ffmpeg -i clip.mp4 frames/%05d.png`. Resizing to a model's resolution is the family processor's job.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..errors import DataError

__all__ = ["FRAME_SUFFIXES", "VIDEO_FILE_SUFFIXES", "frame_files", "load_video_frames", "sample_indices"]

logger = logging.getLogger(__name__)

FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
# Files a user may pass expecting them to be decoded; answered with how to get frames instead.
VIDEO_FILE_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".gif", ".flv", ".wmv")
REASON = "bad video"


def sample_indices(total: int, num_frames: int) -> np.ndarray:
    """Indices of `num_frames` frames spread uniformly over `total` (qwen-vl-utils' rule, see module doc).

    total=10, num_frames=4 -> linspace 0, 3, 6, 9 -> [0, 3, 6, 9]; total=8, num_frames=3 -> 0, 3.5, 7 -> [0, 4, 7].
    """
    if num_frames < 1:
        raise DataError(f"num_frames must be >= 1, got {num_frames}", REASON)
    if num_frames > total:
        raise DataError(f"asked for {num_frames} frames but the clip has only {total}", REASON)
    return np.round(np.linspace(0, total - 1, num_frames)).astype(np.int64)


def _natural_key(name: str) -> list[Any]:
    # Zero-padded names sort as plain text does; unpadded ones (ffmpeg's %d) sort by number.
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def frame_files(folder: str | Path) -> list[Path]:
    """The frame images of `folder` in playback order; other files are skipped with a count in the log."""
    folder = Path(folder)
    entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    frames = sorted((p for p in entries if p.is_file() and p.suffix.lower() in FRAME_SUFFIXES),
                    key=lambda p: _natural_key(p.name))
    skipped = len(entries) - len(frames)
    if skipped:
        logger.warning("%s: skipped %d entries that are not frame images (%s)", folder, skipped,
                       "/".join(FRAME_SUFFIXES))
    if not frames:
        raise DataError(f"no frame images in the folder (looked for {', '.join(FRAME_SUFFIXES)})", REASON,
                        source=folder)
    return frames


def _load_folder(folder: Path, num_frames: int | None) -> np.ndarray:
    files = frame_files(folder)
    sizes = []
    for path in files:  # headers only: cheap, and every size is checked even when few frames are kept
        try:
            with Image.open(path) as image:
                sizes.append(image.size)
        except (UnidentifiedImageError, OSError) as e:
            raise DataError(f"cannot read frame {path.name} ({e})", REASON, source=folder) from None
    if len(set(sizes)) > 1:
        first = next(i for i, s in enumerate(sizes) if s != sizes[0])
        raise DataError(f"frames have different sizes: {files[0].name} is {sizes[0][0]}x{sizes[0][1]}, "
                        f"{files[first].name} is {sizes[first][0]}x{sizes[first][1]} (W x H)", REASON, source=folder)
    try:
        keep = range(len(files)) if num_frames is None else sample_indices(len(files), num_frames)
    except DataError as e:
        raise e.located(source=folder) from None
    frames = []
    for i in keep:
        with Image.open(files[i]) as image:
            frames.append(np.asarray(image.convert("RGB")))
    return np.stack(frames)


def _channels_last(shape: tuple[int, ...], floating: bool) -> bool:
    """Whether a 4-D clip holds its 3 channels last (True) or at axis 1 (False); ValueError when neither has 3."""
    last, first = shape[3] == 3, shape[1] == 3
    if last and first:  # (T, 3, H, 3): the dtype's usual layout decides
        return not floating
    if not (last or first):
        raise ValueError
    return last


def _from_array(array: np.ndarray, source: str | Path | None) -> np.ndarray:
    def fail(message: str) -> DataError:
        return DataError(message, REASON, source=source)

    accepted = "expected (T, H, W, 3) uint8 or (T, 3, H, W) float in [0, 1]"
    if array.ndim != 4:
        hint = " (one image is one frame: add a leading axis)" if array.ndim == 3 else ""
        raise fail(f"{accepted}, got {array.ndim}-D shape {tuple(array.shape)}{hint}")
    floating = np.issubdtype(array.dtype, np.floating)
    if not floating and array.dtype != np.uint8:
        raise fail(f"{accepted}, got dtype {array.dtype}")
    try:
        last = _channels_last(array.shape, floating)
    except ValueError:
        raise fail(f"{accepted}: no axis of 3 RGB channels in shape {tuple(array.shape)}") from None
    if 0 in array.shape:
        raise fail(f"empty clip, shape {tuple(array.shape)}")
    if not last:
        array = array.transpose(0, 2, 3, 1)
    if floating:
        if not np.isfinite(array).all():
            raise fail("float frames hold NaN or inf")
        low, high = float(array.min()), float(array.max())
        if low < 0 or high > 1:
            raise fail(f"float frames must lie in [0, 1], got values in [{low:g}, {high:g}] "
                       "(pass uint8 for 0..255 pixels)")
        array = np.round(array.astype(np.float64) * 255).astype(np.uint8)
    return np.ascontiguousarray(array)


def load_video_frames(source: str | Path | np.ndarray | torch.Tensor, num_frames: int | None = None) -> np.ndarray:
    """One clip as (T, H, W, 3) uint8 from a frame folder, a `.npy` file, an array or a tensor (module doc).

    `num_frames` keeps that many frames, uniformly spaced (`sample_indices`). Errors are DataError
    naming the path and what is wrong.
    """
    if isinstance(source, torch.Tensor):
        tensor = source.detach().cpu()
        if tensor.is_floating_point() and tensor.dtype not in (torch.float32, torch.float64):
            tensor = tensor.float()  # numpy has no bfloat16
        array, path = tensor.numpy(), None
    elif isinstance(source, np.ndarray):
        array, path = source, None
    elif isinstance(source, (str, Path)):
        path = Path(source)
        if path.is_dir():
            return _load_folder(path, num_frames)
        if not path.exists():
            raise DataError("no such video folder or .npy file", REASON, source=path)
        suffix = path.suffix.lower()
        if suffix in VIDEO_FILE_SUFFIXES:
            raise DataError(f"{suffix} files are not decoded (no video decoder in the core install); extract the "
                            f"frames into a folder and pass the folder, e.g. ffmpeg -i {path.name} frames/%05d.png",
                            REASON, source=path)
        if suffix != ".npy":
            raise DataError("a video is a folder of frame images or a .npy array of frames, got a "
                            f"{suffix or 'suffix-less'} file", REASON, source=path)
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as e:
            raise DataError(f"cannot read the .npy file ({e})", REASON, source=path) from None
        if not isinstance(array, np.ndarray):  # an .npz saved under a .npy name
            raise DataError("the .npy file holds no single array", REASON, source=path)
    else:
        raise DataError(f"a video is a folder, a .npy file, a numpy array or a torch tensor, got "
                        f"{type(source).__name__}", REASON)
    frames = _from_array(array, path)
    if num_frames is not None:
        try:
            frames = frames[sample_indices(len(frames), num_frames)]
        except DataError as e:
            raise e.located(source=path) from None
    return frames
