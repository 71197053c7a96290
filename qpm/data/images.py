"""Images as the datasets hold them: one split's files (with boxes) or in-memory digits, and
the two torch datasets that read them (files through PIL, digits from a uint8 tensor).

:func:`read_rgb` is the one way an image file becomes pixels (training, explanations and
``qpm predict``): 16-bit and float images are rescaled, decompression bombs refused.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from qpm.errors import QPMError
from qpm.text import printable

log = logging.getLogger("qpm.data")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")


@dataclass
class Split:
    """One split: image files (with optional boxes) or an in-memory uint8 array."""

    labels: np.ndarray
    paths: list[Path] | None = None
    boxes: np.ndarray | None = None  # (N, 4) x, y, w, h, for --crop-gt
    images: torch.Tensor | None = None  # (N, C, H, W) uint8

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass
class RawData:
    train: Split
    test: Split
    class_names: list[str]
    in_channels: int = 3
    extra: dict = field(default_factory=dict)


# Pillow image modes with more than 8 bits per channel, which convert("RGB") would clip.
WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def read_rgb(path: Path) -> Image.Image:
    """An 8-bit RGB image from any file Pillow reads (see :func:`as_rgb`), turned upright as
    its EXIF orientation says (as every image viewer shows it). Anything unreadable, and an
    image too large to decode safely (a decompression bomb), is a one-line QPMError naming
    the file (escaped); a warning Pillow gives while decoding is one log line naming the
    file (each distinct warning once), not Python's two-line warning on stderr."""
    try:
        with warnings.catch_warnings(record=True) as caught, Image.open(path) as im:
            warnings.simplefilter("always")
            image = as_rgb(upright(im), printable(path))
        for w in caught:
            _warn_once(f"{printable(path)}: {printable(w.message)}", str(w.message))
        return image
    except Image.DecompressionBombError as exc:
        raise QPMError(f"Image {printable(path)} is too large to decode safely "
                       f"({printable(exc)}).", "Downscale it or remove it.") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise QPMError(f"Cannot read image {printable(path)} ({printable(exc)}).",
                       "Replace or remove the broken file.") from None


EXIF_ORIENTATION = 0x0112


def upright(im: Image.Image) -> Image.Image:
    """``im`` rotated or flipped as its EXIF orientation tag says (unreadable EXIF: as is)."""
    try:
        orientation = im.getexif().get(EXIF_ORIENTATION, 1)
    except Exception:  # noqa: BLE001 - broken EXIF must not cost the pixels
        return im
    if orientation in (2, 3, 4, 5, 6, 7, 8):
        from PIL import ImageOps

        return ImageOps.exif_transpose(im)
    return im


_WARNED: set[str] = set()


def _warn_once(line: str, key: str) -> None:
    if key not in _WARNED:
        _WARNED.add(key)
        log.warning(f"image {line}")


def as_rgb(im: Image.Image, source: str = "image") -> Image.Image:
    """8-bit RGB from a PIL image. 16-bit images are scaled by 65535/255 and 32-bit integer
    images by their largest value; float images must hold [0, 1] (scaled by 255) or [0, 255].
    A plain ``convert("RGB")`` would clip them to white instead."""
    if im.mode in WIDE_MODES:
        return _to_8bit(np.asarray(im), im.mode, source)
    return im.convert("RGB")


def _to_8bit(arr: np.ndarray, mode: str, path: str) -> Image.Image:
    arr = arr.astype(np.float64)
    lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0:
        raise QPMError(f"Image {path} ({mode}) holds values in [{lo:g}, {hi:g}]; qpm reads "
                       "non-negative finite intensities.", "Convert it to 8-bit RGB.")
    if mode == "F":
        if hi > 255:
            raise QPMError(f"Image {path} holds floating-point values up to {hi:g}; qpm reads "
                           "float images in [0, 1] or [0, 255].", "Convert it to 8-bit RGB.")
        scale = 255.0 if hi <= 1 else 1.0
    elif mode.startswith("I;16") or hi <= 65535:
        scale = 255.0 / 65535.0 if hi > 255 or mode.startswith("I;16") else 1.0
    else:
        scale = 255.0 / hi
    grey = np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8)
    return Image.fromarray(grey).convert("RGB")


class ImageFiles(Dataset):
    """Images read from disk with PIL, optionally cropped to their box, then transformed."""

    def __init__(self, split: Split, transform: Callable, crop: bool = False) -> None:
        self.split, self.transform, self.crop = split, transform, crop

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int):
        img = read_rgb(self.split.paths[i])
        if self.crop and self.split.boxes is not None:
            x, y, w, h = self.split.boxes[i]
            img = img.crop((int(x), int(y), int(x + max(w, 1)), int(y + max(h, 1))))
        return self.transform(img), int(self.split.labels[i])


class TensorImages(Dataset):
    """In-memory uint8 images (N, C, H, W) scaled to [0, 1], then transformed."""

    def __init__(self, split: Split, transform: Callable) -> None:
        self.split, self.transform = split, transform

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int):
        x = self.split.images[i].float().div_(255.0)
        return self.transform(x), int(self.split.labels[i])
