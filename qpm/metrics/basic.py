"""Accuracy and the compactness of the final layer."""

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
