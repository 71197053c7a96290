"""Which images to show: an example per class for the comparisons, the top images per
feature for the gallery (arrays in, indices out)."""

from __future__ import annotations

import numpy as np


def example_quality(maps: np.ndarray, pooled: np.ndarray, columns: list[np.ndarray]
                    ) -> np.ndarray:
    """How well each image shows its class's features, as in the reference's choice.

    ``maps`` (B, n, h, w) and ``pooled`` (B, n) are the images' selected-feature maps and
    pooled activations; ``columns[i]`` the columns of image i's class. The quality is the
    features' total activation times their spatial diversity (sum over locations of the
    largest spatial softmax among them: 1 when all look at one place, up to k when each has
    its own peak), so the chosen example shows strong features focused on different regions.
    """
    maps = np.asarray(maps, dtype=np.float64)
    out = np.zeros(maps.shape[0])
    for i, cols in enumerate(columns):
        if len(cols) == 0:
            continue
        flat = maps[i, cols].reshape(len(cols), -1)
        soft = np.exp(flat - flat.max(axis=1, keepdims=True))
        soft /= soft.sum(axis=1, keepdims=True)
        out[i] = soft.max(axis=0).sum() * float(np.asarray(pooled)[i, cols].sum())
    return out


def choose_examples(labels: np.ndarray, scores: np.ndarray,
                    quality: np.ndarray | None = None) -> dict[int, int]:
    """Class -> index of its example image: correctly classified, with the highest
    ``quality`` (default: the class's own score).

    ``scores`` are (N, C) logits. A class none of whose images is classified correctly gets
    its best image anyway; a class without images gets none.
    """
    labels = np.asarray(labels)
    scores = np.asarray(scores)
    pred = scores.argmax(axis=1)
    out = {}
    for c in range(scores.shape[1]):
        own = np.flatnonzero(labels == c)
        if own.size == 0:
            continue
        correct = own[pred[own] == c]
        pool = correct if correct.size else own
        value = scores[pool, c] if quality is None else np.asarray(quality)[pool]
        out[c] = int(pool[np.argmax(value)])
    return out


def top_activating(pooled: np.ndarray, per_feature: int) -> np.ndarray:
    """(n, m) indices of the ``m = per_feature`` images with the highest pooled activation
    of each of the n features, strongest first (fewer columns when there are fewer images)."""
    pooled = np.asarray(pooled, dtype=np.float64)
    m = min(per_feature, pooled.shape[0])
    order = np.argsort(-pooled, axis=0, kind="stable")[:m]
    return order.T
