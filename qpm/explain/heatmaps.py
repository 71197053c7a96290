"""Feature maps drawn as in the QPM reference's class comparisons (pure numpy).

For one feature shown on several images: each raw map is min-max scaled per image and
upsampled (bilinear) to the image; it is dimmed by ``sqrt(mean map)`` relative to the most
active image, so a feature that is barely present on one image does not look as strong as
on the other; a gamma (3) leaves only the peak regions; the result colours a ramp from white
to the feature's own colour, blended 70/30 over the greyscale image (:func:`overlay`, the
class comparisons), or tints the image in its own colours (:func:`tint`, the gallery).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# One colour per column, in the reference's order (red, green, blue, yellow, magenta,
# orange) but darker, so that they also read as text on white (contrast 4.5:1 or more, the
# WCAG's for normal text) and stand out from a greyscale image (no grey); later columns go
# round again.
PALETTE: tuple[tuple[float, float, float], ...] = (
    (0.84, 0.0, 0.0), (0.0, 0.5, 0.0), (0.0, 0.25, 1.0), (0.5, 0.42, 0.0), (0.8, 0.0, 0.8),
    (0.75, 0.3, 0.0), (0.0, 0.45, 0.5), (0.5, 0.25, 0.05), (0.45, 0.2, 0.75),
    (0.75, 0.0, 0.4),
)
TINT_SHARE = 0.6  # the feature colour's share where a gallery image is most active
GAMMA = 3.0  # the reference's default: only peak regions stay visible
HEAT_SHARE = 0.7  # the heat map's share in the blend when maps are scaled across images
RAMP_GAMMA = 1.5  # the reference darkens its white-to-colour ramp with this power


def colour(i: int) -> tuple[float, float, float]:
    return PALETTE[i % len(PALETTE)]


def upsample(m: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of a 2-D map with pixel centres aligned (as OpenCV's INTER_LINEAR)."""
    m = np.asarray(m, dtype=np.float64)
    h, w = m.shape

    def axis(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, pos - lo

    y0, y1, wy = axis(height, h)
    x0, x1, wx = axis(width, w)
    top = m[y0][:, x0] * (1 - wx) + m[y0][:, x1] * wx
    bottom = m[y1][:, x0] * (1 - wx) + m[y1][:, x1] * wx
    return top * (1 - wy)[:, None] + bottom * wy[:, None]


def scale_maps(maps: Sequence[np.ndarray], sizes: Sequence[tuple[int, int]],
               gamma: float = GAMMA, across_images: bool = True) -> list[np.ndarray]:
    """One feature's raw maps on several images -> intensities in [0, 1], each upsampled to
    its image's (height, width) in ``sizes``."""
    out = []
    for m, size in zip(maps, sizes, strict=True):
        m = np.asarray(m, dtype=np.float64)
        m = m - m.min()
        out.append(upsample(m / (m.max() + 1e-7), *size))
    if across_images and len(out) > 1:
        # A map's overall strength: the square root of its mean raw activation.
        strength = np.sqrt(np.clip([float(np.mean(m)) for m in maps], 0, None))
        top = float(strength.max())
        out = [o * (s / top if top > 0 else 1.0) for o, s in zip(out, strength, strict=True)]
    peak = max(float(o.max()) for o in out) if out else 0.0
    if peak > 0:
        # Each map keeps its own maximum; below it the values fall off with the power gamma.
        out = [(o ** gamma) / peak ** gamma * float(o.max()) for o in out]
    return out


def greyscale(image: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, 3) in [0, 1] -> (H, W) luminance."""
    x = np.asarray(image, dtype=np.float64)
    if x.ndim == 3:
        x = x[..., 0] * 0.2989 + x[..., 1] * 0.5870 + x[..., 2] * 0.1140
    return x


def tint(image: np.ndarray, heat: np.ndarray, rgb: tuple[float, float, float],
         share: float = TINT_SHARE) -> np.ndarray:
    """The image in its own colours, tinted towards ``rgb`` where ``heat`` (H, W) in [0, 1]
    is high: the feature gallery, where a colour image should stay a colour image."""
    x = np.asarray(image, dtype=np.float64)
    if x.ndim == 2:
        x = np.repeat(x[..., None], 3, axis=-1)
    t = np.clip(np.asarray(heat, dtype=np.float64), 0, 1)[..., None] * share
    return np.clip(x * (1 - t) + t * np.asarray(rgb, dtype=np.float64), 0, 1)


def overlay(image: np.ndarray, heat: np.ndarray, rgb: tuple[float, float, float],
            heat_share: float = HEAT_SHARE) -> np.ndarray:
    """``heat`` (H, W) in [0, 1] as a white-to-``rgb`` ramp blended over the greyscale image;
    returns (H, W, 3) in [0, 1], rescaled so its brightest pixel is 1."""
    t = np.clip(np.asarray(heat, dtype=np.float64), 0, 1)[..., None]
    ramp = ((1 - t) + t * np.asarray(rgb, dtype=np.float64)) ** RAMP_GAMMA
    grey = greyscale(image)[..., None]
    out = ramp * heat_share + grey * (1 - heat_share)
    return out / max(float(out.max()), 1e-12)
