"""Non-conformity scores: THR (LAC), APS and CHiQPM's hierarchical score, as numpy functions.

A larger score means the class conforms less to the image. Each function returns the (N, C)
scores of every class on every image; a method (:mod:`qpm.conformal.methods`) calibrates a
threshold on the scores of the true classes and keeps the classes at or below it.
"""

from __future__ import annotations

import numpy as np

from qpm.conformal.paths import shared_depth, sorted_paths


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def thr_scores(probs: np.ndarray) -> np.ndarray:
    """THR (Sadinle et al. 2016; torchcp's ``LAC``, formerly ``THR``): 1 - p_c."""
    return 1.0 - np.asarray(probs, dtype=np.float64)


def aps_scores(probs: np.ndarray, u: np.ndarray | None = None) -> np.ndarray:
    """APS (Romano et al. 2020) as torchcp computes it: the probability mass of the classes
    ranked before c plus ``1 - u`` of p_c, i.e. ``cumsum - u * p_c`` along the classes sorted
    by probability (ties: lower class first). ``u`` (N, C) or (N,) in [0, 1) randomises the
    score (torchcp's default); None gives the deterministic score (u = 0)."""
    p = np.asarray(probs, dtype=np.float64)
    order = np.argsort(-p, axis=1, kind="stable")
    ordered = np.take_along_axis(p, order, axis=1)
    cum = np.cumsum(ordered, axis=1)
    scores = np.empty_like(p)
    np.put_along_axis(scores, order, cum, axis=1)
    if u is not None:
        u = np.asarray(u, dtype=np.float64)
        scores = scores - (u[:, None] if u.ndim == 1 else u) * p
    return scores


def hierarchical_parts(values: np.ndarray, columns: np.ndarray, predicted: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray]:
    """(depth, activations): each class's shared depth with the predicted class (N, C) and
    its path's activations (N, C, k) (see :mod:`qpm.conformal.paths`)."""
    feats, acts = sorted_paths(values, columns)
    return shared_depth(feats, predicted), acts


def hierarchical_scores(depth: np.ndarray, activations: np.ndarray, level: int) -> np.ndarray:
    """CHiQPM's hierarchical non-conformity score at ``level`` (the reference's
    ``HieraDiffNonConformityScore``, its paper's Eq. 10-13), for every class.

    With m = the class's shared depth (``depth``) and a_j its path's activations: the score
    is minus the activation where its path leaves the predicted class's (a_m; 0 when m = k)
    minus the activations the two share from position ``level`` on (a_level + ... + a_m-1).
    At ``level`` > 0 a class sharing fewer than ``level`` positions scores 0, as in the
    reference. With non-negative activations the predicted class has the lowest score.
    """
    d = np.asarray(depth)
    a = np.asarray(activations, dtype=np.float64)
    k = a.shape[-1]
    if not 0 <= level <= k:
        raise ValueError(f"level must lie in [0, {k}], got {level}")
    pos = np.arange(k)
    shared_sum = np.where((pos < d[..., None]) & (pos >= level), a, 0.0).sum(axis=-1)
    at_split = np.take_along_axis(a, np.minimum(d, k - 1)[..., None], axis=-1)[..., 0]
    score = -np.where(d < k, at_split, 0.0) - shared_sum
    if level > 0:
        score = np.where(d >= level, score, 0.0)
    return score
