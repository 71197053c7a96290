"""Metrics over the final layer's input features (N, F): Class-Independence,
Contrastiveness, Correlation, and Q-SENN's Dependence (which also needs the weights)."""

from __future__ import annotations

from statistics import NormalDist

import numpy as np


def class_independence(features: np.ndarray, labels: np.ndarray) -> float:
    """How little a feature belongs to a single class: 1 - mean_f max_c share_fc.

    As in the reference: each feature's activations are shifted by their minimum over the N
    images (so all are >= 0); ``share_fc`` = (sum over images of class c) / max(sum over all
    images, 1e-8). A feature only active on one class has max share 1 (contributes 0), one
    equally active on C equally large classes 1/C, a constant feature 0. Invariant to a
    positive scaling and a shift of each feature, so raw and normalised features agree.
    """
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels).astype(np.int64)
    if x.ndim != 2 or x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ValueError(f"features must be (N, F) with N = {y.shape[0]} labels, got {x.shape}")
    shifted = x - x.min(axis=0)
    total = np.maximum(shifted.sum(axis=0), 1e-8)
    per_class = np.stack([shifted[y == c].sum(axis=0) for c in np.unique(y)])  # (C, F)
    return float(1.0 - (per_class / total).max(axis=0).mean())


def gmm_overlap(values: np.ndarray, seed: int = 0) -> float:
    """Overlap of the two components of a 2-component Gaussian mixture fitted to ``values``.

    The overlap is the overlapping coefficient of the two *unweighted* component densities,
    OVL = integral over x of min(N(x; mu_1, s_1), N(x; mu_2, s_2)) dx, in [0, 1]: 1 for
    identical components, about 0 for well-separated ones. (The mixture weights are ignored,
    as in the QPM reference code.)
    """
    from sklearn.mixture import GaussianMixture

    v = np.asarray(values, dtype=np.float64).reshape(-1, 1)
    if np.ptp(v) == 0:
        return 1.0  # a constant feature cannot separate anything
    gmm = GaussianMixture(n_components=2, random_state=seed).fit(v)
    mu = gmm.means_.ravel()
    sd = np.sqrt(gmm.covariances_.ravel())
    return float(NormalDist(mu[0], sd[0]).overlap(NormalDist(mu[1], sd[1])))


def contrastiveness(
    features: np.ndarray, seed: int = 0, max_samples: int | None = None
) -> float:
    """1 - mean over features of :func:`gmm_overlap` of the feature's activations.

    High when each feature's activations split into two well-separated modes (present /
    absent). All images are used, as in the reference; ``max_samples`` limits each fit to a
    seeded random subset. The fits are seeded (the reference's are not), so a value is
    reproducible; between seeds it varies by about 0.005.
    """
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"features must be (N, F), got shape {x.shape}")
    if max_samples is not None and x.shape[0] > max_samples:
        rows = np.random.default_rng(seed).choice(x.shape[0], max_samples, replace=False)
        x = x[rows]
    overlaps = [gmm_overlap(x[:, i], seed=seed) for i in range(x.shape[1])]
    return float(1.0 - np.mean(overlaps))


def correlation(features: np.ndarray) -> float | None:
    """Mean over features of the highest cosine similarity to another feature (reference).

    Each feature is the column of its activations over the N images, NOT centred (uncentred
    cosine; a norm below 1e-8 counts as 1e-8, so an all-zero feature has similarity 0); the
    diagonal is set to 0 before the maximum. Lower means less redundant features. Pass what
    the final layer sees: raw pooled features for a dense model, the normalised selected
    features for a sparse one (on z-scored features this is the mean highest Pearson
    correlation). None with fewer than two features.
    """
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"features must be (N, F), got shape {x.shape}")
    if x.shape[1] < 2:
        return None
    unit = x / np.maximum(np.linalg.norm(x, axis=0), 1e-8)
    sim = unit.T @ unit
    np.fill_diagonal(sim, 0.0)
    return float(sim.max(axis=0).mean())


def dependence(features: np.ndarray, weight: np.ndarray, predicted: np.ndarray) -> float | None:
    """Q-SENN's Dependence: how much a decision rests on its single largest contribution.

    With x_n the final layer's input (N, F) and c_n the predicted class, the contributions
    are a_nj = |x_nj * W[c_n, j]|; per image the largest share max_j a_nj / sum_j a_nj, and
    the metric is its mean over the images (an image with no contribution at all is left
    out, as the reference drops its NaN). 1/F for equal contributions, 1 when one feature
    decides alone. None if no image has a contribution.
    """
    x = np.asarray(features, dtype=np.float64)
    w = np.asarray(weight, dtype=np.float64)
    pred = np.asarray(predicted).astype(np.int64)
    if x.ndim != 2 or w.ndim != 2 or w.shape[1] != x.shape[1] or pred.shape != (x.shape[0],):
        raise ValueError(f"need features (N, F), weight (C, F), predicted (N,); got {x.shape}, "
                         f"{w.shape}, {pred.shape}")
    contrib = np.abs(x * w[pred])
    total = contrib.sum(axis=1)
    ok = total > 0
    if not ok.any():
        return None
    return float((contrib[ok].max(axis=1) / total[ok]).mean())
