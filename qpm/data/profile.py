"""What a model's training images looked like, so that an input unlike them can be flagged.

A model predicts *something* for any input: a colour photo through a digits model gets a
digit, with probability 1.0. :func:`profile_split` describes a sample of the training images
before any transform (their sizes, whether any is in colour or greyscale, their mean
brightness); the model files carry it (``meta["inputs"]``), and :func:`differences` says how
one input differs from it, in words, for ``qpm predict``'s output.

What counts as different (each a sentence in :func:`differences`):

- **size**: width or height below half the smallest or above twice the largest seen;
- **channels**: a colour image where every training image was greyscale, or the reverse;
- **value range**: mean brightness (0 black .. 1 white) more than :data:`BRIGHTNESS_MARGIN`
  outside the range the training images span (white digits on black have 0.1-0.3; a photo,
  or black digits on white, lies far outside).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

SAMPLE = 256  # training images read for the profile (seeded choice)
SIZE_FACTOR = 2.0
BRIGHTNESS_MARGIN = 0.1
# An RGB image whose channels differ by at most this (of 255) anywhere is greyscale.
GREY_TOLERANCE = 2


@dataclass(frozen=True)
class ImageStats:
    """One image as it arrives, before any transform."""

    width: int
    height: int
    colour: bool
    brightness: float  # mean intensity in [0, 1]


@dataclass(frozen=True)
class InputProfile:
    """The training images of a model, from a sample of ``count`` of them."""

    count: int
    width: tuple[int, int]  # smallest, largest
    height: tuple[int, int]
    colour: bool  # some training image is in colour
    greyscale: bool  # some training image is greyscale
    brightness: tuple[float, float]  # smallest, largest mean intensity

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> InputProfile | None:
        """The profile a model file records; None for a file without one (or a broken one:
        then nothing is flagged, as before profiles were recorded)."""
        try:
            return cls(int(data["count"]), _pair(data["width"], int), _pair(data["height"], int),
                       bool(data["colour"]), bool(data["greyscale"]),
                       _pair(data["brightness"], float))
        except (KeyError, TypeError, ValueError):
            return None


def _pair(value: Any, kind: type) -> tuple:
    lo, hi = value
    return kind(lo), kind(hi)


def image_stats(image) -> ImageStats:
    """Stats of a PIL image (any mode qpm reads, as :func:`~qpm.data.images.as_rgb` reads it)
    or a uint8 array: (H, W), (H, W, 3) or the digit sets' (1, H, W)."""
    from PIL import Image

    from qpm.data.images import as_rgb

    arr = np.asarray(as_rgb(image) if isinstance(image, Image.Image) else image)
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = np.moveaxis(arr, 0, -1)
    if arr.ndim == 3 and arr.shape[-1] in (1, 4):
        arr = arr[..., :1] if arr.shape[-1] == 1 else arr[..., :3]  # alpha: not content
    height, width = arr.shape[:2]
    values = arr.astype(np.int16)
    colour = bool(arr.ndim == 3 and arr.shape[-1] == 3
                  and np.abs(np.diff(values, axis=-1)).max(initial=0) > GREY_TOLERANCE)
    return ImageStats(int(width), int(height), colour, float(values.mean() / 255.0))


def profile(stats: list[ImageStats]) -> InputProfile:
    widths = [s.width for s in stats]
    heights = [s.height for s in stats]
    bright = [s.brightness for s in stats]
    return InputProfile(len(stats), (min(widths), max(widths)), (min(heights), max(heights)),
                        any(s.colour for s in stats), not all(s.colour for s in stats),
                        (round(min(bright), 4), round(max(bright), 4)))


def profile_split(split, sample: int = SAMPLE, seed: int = 0) -> InputProfile:
    """The profile of a seeded sample of one split's images (files or in-memory digits)."""
    from qpm.data.images import read_rgb

    n = len(split)
    chosen = np.sort(np.random.default_rng(seed).permutation(n)[:sample])
    stats = []
    for i in chosen:
        if split.images is not None:
            stats.append(image_stats(split.images[int(i)].numpy()))
            continue
        stats.append(image_stats(np.asarray(read_rgb(split.paths[int(i)]))))
    return profile(stats)


def differences(stats: ImageStats, prof: InputProfile) -> list[str]:
    """How one input differs from the training images, one phrase per difference."""
    out = []
    (w0, w1), (h0, h1) = prof.width, prof.height
    if (stats.width < w0 / SIZE_FACTOR or stats.width > w1 * SIZE_FACTOR
            or stats.height < h0 / SIZE_FACTOR or stats.height > h1 * SIZE_FACTOR):
        seen = f"{w0}x{h0}" if (w0, h0) == (w1, h1) else f"{w0}-{w1} x {h0}-{h1}"
        out.append(f"size {stats.width}x{stats.height} (training: {seen})")
    if stats.colour and not prof.colour:
        out.append("colour (training: greyscale)")
    elif not stats.colour and not prof.greyscale:
        out.append("greyscale (training: colour)")
    lo, hi = prof.brightness
    if not lo - BRIGHTNESS_MARGIN <= stats.brightness <= hi + BRIGHTNESS_MARGIN:
        out.append(f"brightness {stats.brightness:.2f} (training: {lo:.2f}-{hi:.2f})")
    return out
