"""Accuracy, the compactness of the final layer and how many class pairs differ in one
feature (CHiQPM's contrastive pairs)."""

from __future__ import annotations

import numpy as np


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of correct predictions.

    ``predictions`` is either (N,) predicted class indices or (N, C) scores, in which case the
    prediction is the arg-max of each row. Returns a value in [0, 1].
    """
    pred = np.asarray(predictions)
    if pred.ndim == 2:
        pred = pred.argmax(axis=1)
    labels = np.asarray(labels)
    if pred.shape != labels.shape or labels.size == 0:
        raise ValueError(f"need as many predictions as labels, got {pred.shape} and {labels.shape}")
    return float(np.mean(pred == labels))


def n_features(weight: np.ndarray, atol: float = 0.0) -> int:
    """Number of features the layer uses: columns of the (C, F) weight with any |w| > atol."""
    w = np.abs(np.asarray(weight))
    return int(np.count_nonzero((w > atol).any(axis=0)))


def features_per_class(weight: np.ndarray, atol: float = 0.0) -> float:
    """Mean over classes of the number of non-zero weights (|w| > atol) in the class's row."""
    w = np.abs(np.asarray(weight))
    return float(np.mean(np.count_nonzero(w > atol, axis=1)))


def _binary_sets(weight: np.ndarray) -> tuple[np.ndarray, int] | None:
    """(C, F) 0/1 matrix and k for a layer whose classes each use k features with weight 1,
    else None (dense and real-valued layers have no such pairs)."""
    w = np.asarray(weight)
    if w.ndim != 2 or not np.all((w == 0) | (w == 1)):
        return None
    counts = np.count_nonzero(w, axis=1)
    if counts.size == 0 or np.any(counts != counts[0]) or counts[0] < 2:
        return None
    return w.astype(np.int64), int(counts[0])


def pairs_sharing(weight: np.ndarray) -> int | None:
    """How many class pairs share exactly k-1 of their k features (so they differ in one
    feature each), for a binary layer with k features per class; None for other layers."""
    found = _binary_sets(weight)
    if found is None:
        return None
    w, k = found
    shared = w @ w.T
    return int(np.count_nonzero(np.triu(shared == k - 1, k=1)))


def forced_pairs_sharing(weight: np.ndarray, pairs: np.ndarray) -> int | None:
    """How many of the class ``pairs`` (P, 2) share exactly k-1 features in a binary layer."""
    found = _binary_sets(weight)
    if found is None:
        return None
    w, k = found
    p = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    return int(np.count_nonzero((w[p[:, 0]] * w[p[:, 1]]).sum(axis=1) == k - 1))
