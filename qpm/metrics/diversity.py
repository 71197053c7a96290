"""SID@k: how diverse the places are that a class's top-k features look at."""

from __future__ import annotations

import numpy as np


def _spatial_softmax(maps: np.ndarray) -> np.ndarray:
    """Softmax over the flattened spatial axis of (..., L) maps, numerically stable."""
    shifted = maps - maps.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)


def sid_at_k(
    feature_maps: np.ndarray,
    weight: np.ndarray,
    predicted: np.ndarray,
    k: int = 5,
    scale: str = "relative_mean",
    chunk: int = 256,
) -> float | None:
    """Spatial diversity of the k most-weighted features of the predicted class (SID@k).

    For image n with predicted class c, take the k features with the largest weights
    ``weight[c]`` (only classes with at least k non-zero weights count; images predicted as
    other classes are skipped). Softmax each of the k maps over its H*W locations, giving
    s_1..s_k that each sum to 1. With ``scale="relative_mean"`` (the QPM paper's SID@5) each
    s_i is multiplied by r_i = mean(M_i) / max_f mean(M_f), the map's mean activation relative
    to the image's most active feature among all F given maps (the model's features: its
    selected ones for a sparse layer), as in the feature-diversity loss; r_i = 1 when no map
    has a positive mean. So a feature that is hardly active cannot look diverse.
    ``scale="none"`` gives Q-SENN's diversity@k. Per image::

        SID = sum over locations of max_i (r_i * s_i)  /  k

    which is 1 when the k maps attend to disjoint places (and are as active as the image's
    most active feature) and 1/k when they are identical.
    The result is the mean over the counted images, or None when no image counts.
    """
    fm = np.asarray(feature_maps, dtype=np.float64)
    if fm.ndim != 4:
        raise ValueError(f"feature_maps must be (N, F, H, W), got shape {fm.shape}")
    w = np.asarray(weight, dtype=np.float64)
    pred = np.asarray(predicted).astype(np.int64)
    if scale not in ("relative_mean", "none"):
        raise ValueError(f"scale must be 'relative_mean' or 'none', got {scale!r}")
    n, f = fm.shape[:2]
    if w.shape[1] != f:
        raise ValueError(f"weight has {w.shape[1]} features but the maps have {f}")
    # top-k features per class, by weight value (the reference uses the signed weight)
    top = np.argsort(-w, axis=1, kind="stable")[:, :k]
    enough = np.count_nonzero(w, axis=1) >= k
    keep = np.flatnonzero(enough[pred])
    if keep.size == 0:
        return None
    total = 0.0
    for start in range(0, keep.size, chunk):
        idx = keep[start : start + chunk]
        feats = top[pred[idx]]  # (b, k)
        maps = fm[idx[:, None], feats].reshape(idx.size, k, -1)  # (b, k, L)
        soft = _spatial_softmax(maps)
        if scale == "relative_mean":
            means = maps.mean(axis=-1)  # (b, k)
            peak = fm[idx].mean(axis=(2, 3)).max(axis=1, keepdims=True)  # over all F maps
            safe = np.where(peak > 0, peak, 1.0)
            rel = np.where(peak > 0, np.clip(means, 0, None) / safe, 1.0)
            soft = soft * rel[:, :, None]
        total += float((soft.max(axis=1).sum(axis=1) / k).sum())
    return total / keep.size
