"""The feature gallery: for one feature, the training images that activate it most, with
its map over each, so a person can put a name to "feature 38".

The images are small PNGs (Pillow only, no text): the page lays them out with their
captions, and the class cards reuse the first one as the feature's thumbnail.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from qpm.explain.heatmaps import colour, scale_maps, tint
from qpm.io import atomic_write

GALLERY_COLOUR = colour(0)
THUMB_PX = 128


def save_feature_images(folder: str | Path, feature: int, images: list[np.ndarray],
                        maps: list[np.ndarray], px: int = THUMB_PX) -> list[str]:
    """``folder/feature_F_R.png`` for each top image (rank R from 1): the image in its own
    colours, tinted where the feature is active, the maps scaled jointly so the images
    compare directly. Returns the file names."""
    from PIL import Image

    heats = scale_maps(maps, [im.shape[:2] for im in images])
    names = []
    for rank, (image, heat) in enumerate(zip(images, heats, strict=True), start=1):
        rgb = (tint(image, heat, GALLERY_COLOUR) * 255).round()
        im = Image.fromarray(rgb.astype(np.uint8))
        scale = px / max(im.size)
        size = (max(1, round(im.size[0] * scale)), max(1, round(im.size[1] * scale)))
        im = im.resize(size, Image.NEAREST if scale >= 1 else Image.LANCZOS)
        name = f"feature_{int(feature)}_{rank}.png"
        atomic_write(Path(folder) / name, lambda fh, im=im: im.save(fh, format="PNG"))
        names.append(name)
    return names
