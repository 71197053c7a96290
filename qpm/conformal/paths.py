"""Each class's features in the order an image activates them, and how far each class agrees
with the predicted class along that order (CHiQPM's delta).

A binary layer gives every class ``k`` features. On one image, sort each class's features by
activation, largest first: that is the class's *path*. Class ``c`` agrees with the predicted
class ``p`` up to level ``j`` when the first ``j`` features of their paths are the same
features in the same order; :func:`shared_depth` is the largest such ``j`` (``k`` for ``p``
itself). The CHiQPM reference computes the same as a cumulative product of "same feature at
position j" over the positions (its delta_n).

Ties (equal activations, e.g. features at 0 after a ReLU) are ordered by the feature's column
in the layer, lower first, so the result is deterministic; the reference sorts with
``torch.sort``, whose order of ties is unspecified.

Pure numpy: arrays in, arrays out.
"""

from __future__ import annotations

import numpy as np


def class_columns(weight: np.ndarray) -> np.ndarray:
    """(C, k) columns of each class's features, ascending, for a binary (C, n) layer whose
    classes all have the same number k of features. ValueError otherwise."""
    w = np.asarray(weight)
    if w.ndim != 2 or w.size == 0:
        raise ValueError(f"the layer must be a non-empty (C, n) matrix, got shape {w.shape}")
    if not np.all((w == 0) | (w == 1)):
        raise ValueError("a hierarchy needs a binary layer (weights 0 or 1)")
    per_class = np.count_nonzero(w, axis=1)
    if per_class.min() != per_class.max() or per_class[0] == 0:
        raise ValueError("a hierarchy needs the same number (> 0) of features for every class, "
                         f"got {per_class.min()} to {per_class.max()}")
    k = int(per_class[0])
    return np.nonzero(w)[1].reshape(w.shape[0], k)  # row-major: each row's columns ascending


def is_hierarchical(weight: np.ndarray) -> str | None:
    """None when ``weight`` supports a hierarchy, else the reason it does not."""
    try:
        class_columns(weight)
    except ValueError as exc:
        return str(exc)
    return None


def sorted_paths(values: np.ndarray, columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every class's path on every image.

    ``values`` (N, n): the layer's input (what its weights multiply); ``columns`` (C, k) from
    :func:`class_columns`. Returns ``(features, activations)``, both (N, C, k): the columns
    of class c's features on image i in path order, and their activations.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2:
        raise ValueError(f"values must be (N, n), got shape {v.shape}")
    acts = v[:, columns]  # (N, C, k), columns ascending within a class
    order = np.argsort(-acts, axis=2, kind="stable")  # stable: ties keep column order
    feats = np.broadcast_to(columns, acts.shape)
    return np.take_along_axis(feats, order, axis=2), np.take_along_axis(acts, order, axis=2)


def shared_depth(features: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """(N, C): how many leading path positions class c shares with the predicted class.

    ``features`` (N, C, k) from :func:`sorted_paths`; ``predicted`` (N,) class indices.
    """
    f = np.asarray(features)
    p = np.asarray(predicted, dtype=np.int64)
    same = f == f[np.arange(f.shape[0]), p][:, None, :]
    return np.cumprod(same, axis=2).sum(axis=2)


def path_accuracy(depth_of_label: np.ndarray, per_class: int) -> np.ndarray:
    """(k,) share of images whose true class shares at least j + 1 path positions with the
    predicted class, j = 0..k-1 (the reference's ``total_accs``; the last is top-1 accuracy
    when no two classes have the same features)."""
    d = np.asarray(depth_of_label)
    if d.size == 0:
        return np.zeros(per_class)
    return np.array([(d >= j + 1).mean() for j in range(per_class)], dtype=np.float64)
