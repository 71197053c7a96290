"""Plausibility (DINO-QPM): do the predicted class's features peak on the object?

For each test image, each feature the predicted class uses (a non-zero weight in its row of
the final layer; every feature for a dense model) scores the maximum of its map inside the
object's segmentation mask divided by its maximum anywhere (0 for a map whose maximum is
not positive). An image scores the mean over those features; Plausibility is the mean over
the images. 1 means every feature peaks on the object. This is the reference's
``CUBSegmentationOverlap`` "max" score (evaluation/metrics/batch_metrics.py); the mask is the
CUB segmentation brought to the map's grid (bilinear, then every cell it touches, as the
reference's ``cv2.resize(mask) > 0``).

CUB's masks (``segmentations/<class>/<image>.png``) come as a separate download from the
dataset's page (Caltech's "Segmentations" archive); unpacked into the CUB folder beside
``images/``, ``qpm evaluate`` reports Plausibility for cub2011 runs (:mod:`qpm.metrics.cub`).
"""

from __future__ import annotations

import numpy as np


def plausibility_per_sample(feature_maps: np.ndarray, weight: np.ndarray,
                            predicted: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """(N,) scores for maps (N, n, h, w), weights (C, n), predicted classes (N,) and masks
    (N, h, w) on the maps' grid (True: the object)."""
    maps = np.asarray(feature_maps, dtype=np.float64)
    masks = np.asarray(masks, dtype=bool)
    w = np.asarray(weight)
    if maps.ndim != 4 or masks.shape != (maps.shape[0], *maps.shape[2:]):
        raise ValueError(f"maps {maps.shape} and masks {masks.shape} do not match")
    flat = maps.reshape(maps.shape[0], maps.shape[1], -1)
    peak = flat.max(axis=2)  # (N, n)
    inside = np.where(masks.reshape(masks.shape[0], 1, -1), flat, -np.inf).max(axis=2)
    # A mask without any cell, or a map that is never positive on it, scores 0, as the
    # reference's max(map * mask) does for non-negative maps.
    inside = np.maximum(inside, 0.0)
    score = np.where(peak > 0, inside / np.where(peak > 0, peak, 1.0), 0.0)
    used = w[np.asarray(predicted)] != 0  # (N, n): the predicted class's features
    counts = used.sum(axis=1)
    return np.where(counts > 0, (score * used).sum(axis=1) / np.maximum(counts, 1), 0.0)


def plausibility(feature_maps: np.ndarray, weight: np.ndarray, predicted: np.ndarray,
                 masks: np.ndarray) -> float:
    """The mean of :func:`plausibility_per_sample` over the images."""
    return float(plausibility_per_sample(feature_maps, weight, predicted, masks).mean())
