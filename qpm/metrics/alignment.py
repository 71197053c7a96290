"""Alignment (Q-SENN): how well the features follow CUB's per-image attribute annotations."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qpm.errors import QPMError

IMAGE_ATTRIBUTE_FILE = Path("attributes") / "image_attribute_labels.txt"
# CUB's certainty scale: 1 not visible, 2 guessing, 3 probably, 4 definitely.
MIN_CERTAINTY = 3


@dataclass
class ImageAttributes:
    """Attribute annotations of the training images, one entry per (image, attribute).

    ``rows`` index the training features (the training images in image-id order),
    ``attribute`` is 0-based, ``present`` says whether the annotator saw it.
    """

    rows: np.ndarray
    attribute: np.ndarray
    present: np.ndarray


def read_cub_image_attributes(cub_dir: str | Path, train_ids: Sequence[int]) -> ImageAttributes:
    """The certain (>= "probably") annotations of the training images ``train_ids``.

    ``cub_dir`` is the folder with images.txt; ``train_ids`` are CUB's training image ids in
    the order of the training features. Lines that do not have the five fields
    ``image attribute is_present certainty time`` are skipped (the original file has a few
    such lines; the reference skips them too).
    """
    path = Path(cub_dir) / IMAGE_ATTRIBUTE_FILE
    if not path.is_file():
        raise QPMError(f"CUB attribute file {IMAGE_ATTRIBUTE_FILE} not found in {cub_dir}.",
                       "Point the dataset root at the extracted CUB_200_2011 folder.")
    row_of = {int(i): r for r, i in enumerate(train_ids)}
    rows, attrs, present = [], [], []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            parts = line.split()
            if len(parts) != 5:
                continue
            try:
                img, attr, is_present, certainty = (int(p) for p in parts[:4])
            except ValueError:
                continue
            r = row_of.get(img)
            if r is None or certainty < MIN_CERTAINTY:
                continue
            rows.append(r)
            attrs.append(attr)
            present.append(is_present == 1)
    if not rows:
        raise QPMError(f"{path} holds no certain annotation of a training image.",
                       "Restore the original CUB_200_2011 attribute files.")
    attribute = np.asarray(attrs, dtype=np.int64)
    return ImageAttributes(np.asarray(rows, dtype=np.int64), attribute - attribute.min(),
                           np.asarray(present, dtype=bool))


def cub_alignment(features: np.ndarray, labels: ImageAttributes) -> float:
    """Mean over features of the best attribute's normalised activation difference.

    For feature f and attribute a: D_fa = mean of f over the images annotated "a present"
    minus its mean over those annotated "a absent", divided by the mean of f - min(f) over
    all N images (floored at 1e-8). Alignment = mean_f max_a D_fa. Attributes missing one of
    the two groups get D = 0 (the reference would produce NaN). Invariant to a positive
    scaling and a shift of each feature.
    """
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"features must be (N, F), got shape {x.shape}")
    if labels.rows.size and labels.rows.max() >= x.shape[0]:
        raise ValueError(f"attribute labels refer to image row {labels.rows.max()}, but only "
                         f"{x.shape[0]} feature rows were given")
    n_attr = int(labels.attribute.max()) + 1
    means, missing = [], np.zeros(n_attr, dtype=bool)
    for flag in (True, False):
        ind = np.zeros((x.shape[0], n_attr))
        sel = labels.present == flag
        np.add.at(ind, (labels.rows[sel], labels.attribute[sel]), 1.0)
        count = ind.sum(axis=0)
        means.append((ind.T @ x) / np.maximum(count, 1)[:, None])
        missing |= count == 0
    diff = means[0] - means[1]  # (A, F)
    diff[missing] = 0.0
    scale = np.maximum((x - x.min(axis=0)).mean(axis=0), 1e-8)
    return float((diff / scale).max(axis=0).mean())
