"""Turning what a user hands over (files, folders, PIL images, arrays, tensors) into a batch.

Files and PIL images go through the run's own test transform, exactly as the test set did
during training; a tensor is taken as already transformed (what ``model.transform`` or the
run's data loaders produce). Each image's size, colour and brightness before the transform
come along (:mod:`qpm.data.profile`), so an input unlike the training images can be flagged;
with ``skip_unreadable`` a file that cannot be read is listed instead of ending the batch.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from qpm.data.images import IMAGE_EXTENSIONS, as_rgb, read_rgb
from qpm.data.profile import ImageStats, image_stats
from qpm.errors import QPMError
from qpm.io import check_input_file
from qpm.text import printable


def find_images(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Each path that is an image file, and the image files under each folder (sorted)."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files = sorted(f for f in p.rglob("*")
                           if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
            if not files:
                raise QPMError(f"Folder {printable(p)} holds no image files "
                               f"({', '.join(IMAGE_EXTENSIONS)}).",
                               "Pass image files or a folder that contains some.")
            found.extend(files)
        else:  # a regular file; a pipe or a device would block, a missing path is named
            found.append(check_input_file(p, "Image", "Pass existing image files or folders."))
    return found


def _pil_to_input(img, kind: str, transform: Callable) -> torch.Tensor:
    if kind == "digits":  # the digit sets' transform works on [0, 1] tensors
        x = torch.from_numpy(np.array(img, dtype=np.uint8)).float().div_(255.0)
        x = x.unsqueeze(0) if x.ndim == 2 else x.permute(2, 0, 1)
        return transform(x)
    return transform(img)


@dataclass
class Batch:
    """Model inputs and, per image, where it came from and its stats before the transform
    (None for a tensor, already transformed); ``failed``: (source, why) of unread files."""

    x: torch.Tensor | None
    sources: list[str]
    stats: list[ImageStats | None]
    failed: list[tuple[str, str]] = field(default_factory=list)


def to_batch(images, transform: Callable, kind: str, in_channels: int, first: int = 0,
             skip_unreadable: bool = False) -> Batch:
    """``images`` -> (N, C, H, W) model inputs, where each came from and its stats.

    ``images`` is one item or a sequence of: file paths, PIL images, (H, W) or (H, W, 3)
    uint8 arrays, transformed (C, H, W) tensors; or a transformed (N, C, H, W) tensor.
    In-memory images are named ``<image i>``, counting from ``first``. A file that cannot be
    read is a QPMError, or with ``skip_unreadable`` an entry of ``failed`` (``x`` is None
    when no image was read).
    """
    from PIL import Image

    if isinstance(images, torch.Tensor):
        x = _tensor_batch(images, in_channels)
        return Batch(x, [f"<image {first + i}>" for i in range(x.shape[0])],
                     [None] * x.shape[0])
    if isinstance(images, (str, os.PathLike, Image.Image, np.ndarray)):
        images = [images]
    if not isinstance(images, Sequence) or len(images) == 0:
        raise QPMError("predict needs at least one image.",
                       "Pass file paths, PIL images, uint8 arrays or a tensor batch.")
    mode = "L" if in_channels == 1 else "RGB"
    batch, out = [], Batch(None, [], [])
    for i, item in enumerate(images, start=first):
        if isinstance(item, (str, os.PathLike)):
            try:
                rgb, source = read_rgb(Path(item)), str(item)
            except QPMError as exc:
                if not skip_unreadable:
                    raise
                out.failed.append((str(item), exc.problem))
                continue
        elif isinstance(item, Image.Image):
            source = f"<image {i}>"
            rgb = as_rgb(item, source)
        elif isinstance(item, np.ndarray) and item.dtype == np.uint8 and item.ndim in (2, 3):
            rgb, source = Image.fromarray(item), f"<image {i}>"
        elif isinstance(item, torch.Tensor) and item.ndim == 3:
            batch.append(_tensor_batch(item, in_channels)[0])
            out.sources.append(f"<image {i}>")
            out.stats.append(None)
            continue
        else:
            raise QPMError(f"Cannot use image {i} of type {type(item).__name__}"
                           + (f" {item.dtype}" if isinstance(item, np.ndarray) else "") + ".",
                           "Pass file paths, PIL images, (H, W[, 3]) uint8 arrays or tensors.")
        out.stats.append(image_stats(np.asarray(rgb)))
        batch.append(_pil_to_input(rgb.convert(mode), kind, transform))
        out.sources.append(source)
    out.x = torch.stack(batch) if batch else None
    return out


def _tensor_batch(x: torch.Tensor, in_channels: int) -> torch.Tensor:
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.ndim != 4 or x.shape[1] != in_channels or not x.is_floating_point():
        raise QPMError(f"A tensor batch must be float (N, {in_channels}, H, W), got "
                       f"{x.dtype} {tuple(x.shape)}.",
                       "Pass transformed images (model.transform) or file paths / PIL images.")
    return x
