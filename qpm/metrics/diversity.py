"""SID@k (QPM) and diversity@k (Q-SENN): how diverse the places are that the k most-weighted
features of the predicted class look at."""

from __future__ import annotations

import numpy as np

# The reference floors each map's mean absolute value at this before dividing by it.
MEAN_ABS_FLOOR = 1e-5
NORMALISATIONS = ("mean_abs", "none")


def _spatial_softmax(maps: np.ndarray) -> np.ndarray:
    """Softmax over the last (flattened spatial) axis, numerically stable."""
    shifted = maps - maps.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)


def top_k_features(weight: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """((C, k) feature indices, (C,) eligible) as the reference picks them.

    Candidates are the features some class uses (non-zero weight column); each class takes
    the k candidates with the largest SIGNED weight (so a zero can rank above a negative
    weight; ties go to the lower index). Only classes with at least k non-zero weights are
    eligible.
    """
    w = np.asarray(weight, dtype=np.float64)
    used = np.flatnonzero((w != 0).any(axis=0))
    order = np.argsort(-w[:, used], axis=1, kind="stable")[:, :k]
    eligible = np.count_nonzero(w, axis=1) >= k
    return used[order], eligible


def sid_per_sample(
    feature_maps: np.ndarray,
    weight: np.ndarray,
    predicted: np.ndarray,
    k: int = 5,
    normalise: str = "mean_abs",
) -> np.ndarray:
    """The SID@k of each sample whose predicted class is eligible (see :func:`sid_at_k`)."""
    fm = np.asarray(feature_maps, dtype=np.float64)
    if fm.ndim != 4:
        raise ValueError(f"feature_maps must be (N, F, H, W), got shape {fm.shape}")
    if normalise not in NORMALISATIONS:
        raise ValueError(f"normalise must be one of {NORMALISATIONS}, got {normalise!r}")
    w = np.asarray(weight, dtype=np.float64)
    if w.ndim != 2 or w.shape[1] != fm.shape[1]:
        raise ValueError(f"weight must be (C, {fm.shape[1]}), got shape {w.shape}")
    pred = np.asarray(predicted).astype(np.int64)
    top, eligible = top_k_features(w, k)
    keep = np.flatnonzero(eligible[pred])
    if keep.size == 0:
        return np.zeros(0)
    maps = fm[keep[:, None], top[pred[keep]]]  # (b, k, H, W)
    maps = maps.reshape(keep.size, k, -1)
    if normalise == "mean_abs":
        maps = maps / np.maximum(np.abs(maps).mean(axis=-1, keepdims=True), MEAN_ABS_FLOOR)
    soft = _spatial_softmax(maps)
    return soft.max(axis=1).sum(axis=1) / k


def sid_at_k(
    feature_maps: np.ndarray,
    weight: np.ndarray,
    predicted: np.ndarray,
    k: int = 5,
    normalise: str = "mean_abs",
) -> float | None:
    """SID@k, the QPM reference's "SumNMax" locality, as a mean over samples.

    ``feature_maps`` (N, F, H, W) are the maps of the F features ``weight`` (C, F) acts on;
    ``predicted`` (N,) the predicted classes. For sample n with predicted class c (only
    classes with at least k non-zero weights count, see :func:`top_k_features`):

    1. each of its F maps M_f is divided by max(mean |M_f|, 1e-5) (``normalise="mean_abs"``;
       ``"none"`` skips this step and gives Q-SENN's diversity@k);
    2. a softmax over the H*W locations turns each map into s_f, summing to 1;
    3. with T_c the k features of c of largest weight,
       SID_n = sum over locations of max_{f in T_c} s_f  /  k,

    which is 1 when the k maps attend to disjoint places and 1/k when they are identical.
    The result is the mean of SID_n over the counted samples, None when none counts.
    """
    per_sample = sid_per_sample(feature_maps, weight, predicted, k, normalise)
    return float(per_sample.mean()) if per_sample.size else None


def diversity_at_k(
    feature_maps: np.ndarray, weight: np.ndarray, predicted: np.ndarray, k: int = 5
) -> float | None:
    """Q-SENN's diversity@k: :func:`sid_at_k` with a plain spatial softmax (no division by the
    maps' mean absolute value)."""
    return sid_at_k(feature_maps, weight, predicted, k, normalise="none")
