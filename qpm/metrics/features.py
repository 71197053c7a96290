"""Metrics over pooled feature activations (N, F): class independence, contrastiveness and
correlation of the features a model uses."""

from __future__ import annotations

from statistics import NormalDist

import numpy as np


def class_independence(features: np.ndarray, labels: np.ndarray) -> float | None:
    """How little a feature belongs to a single class: 1 - mean_f max_c share_fc.

    Each feature's activations are shifted by their minimum over the N images (so all are
    >= 0); ``share_fc`` is the part of the feature's summed shifted activation that images of
    class c own: sum over images of class c / sum over all images. A feature only active on
    one class has max share 1 (contributes 0), one equally active on C equally large classes
    has max share 1/C. Constant features (zero total) are left out; None if all are.
    """
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels).astype(np.int64)
    if x.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"features must be (N, F) with N = {y.shape[0]} labels, got {x.shape}")
    shifted = x - x.min(axis=0)
    total = shifted.sum(axis=0)
    valid = total > 0
    if not valid.any():
        return None
    classes = np.unique(y)
    per_class = np.stack([shifted[y == c].sum(axis=0) for c in classes])  # (C, F)
    share = per_class[:, valid] / total[valid]
    return float(1.0 - share.max(axis=0).mean())


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
    features: np.ndarray, seed: int = 0, max_samples: int | None = 5000
) -> float:
    """1 - mean over features of :func:`gmm_overlap` of the feature's activations.

    High when each feature's activations split into two well-separated modes (present /
    absent). At most ``max_samples`` images (a seeded random subset) are used per fit.
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
    """Mean over features of the highest cosine similarity to another feature.

    Each feature is the column of its activations over the N images, centred by its mean
    (so the cosine is the Pearson correlation); constant features are left out. Lower means
    less redundant features. None with fewer than two non-constant features.
    """
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"features must be (N, F), got shape {x.shape}")
    x = x - x.mean(axis=0)
    norm = np.linalg.norm(x, axis=0)
    x = x[:, norm > 0] / norm[norm > 0]
    if x.shape[1] < 2:
        return None
    sim = x.T @ x
    np.fill_diagonal(sim, -np.inf)
    return float(sim.max(axis=1).mean())
