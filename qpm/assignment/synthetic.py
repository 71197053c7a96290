"""Seeded synthetic assignment instances that look like real CNN feature statistics.

Features are non-negative (a ReLU of class mean patterns plus noise), each class drives a
small sparse set of features, classes share a low-rank structure (so some features matter for
several related classes), every sample has a shared low-rank nuisance and an overall gain, a
few features are near-duplicates of others (so R has real redundancy) and a few are dead
(constant zero, as after a ReLU). A and R then come from the paper's preprocessing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qpm.assignment.problem import AssignmentProblem
from qpm.assignment.similarities import compute_similarities
from qpm.errors import QPMError

MAX_ABS_BIAS = 0.316  # the paper's locality bias is scaled to this maximum


@dataclass(frozen=True)
class Size:
    n_total: int  # F, candidate features
    n_classes: int  # C
    n_features: int  # n, features to select
    per_class: int  # k, features per class


SIZES: dict[str, Size] = {
    "tiny": Size(64, 10, 10, 3),
    "small": Size(256, 50, 20, 5),
    "medium": Size(512, 100, 50, 5),
    "cub": Size(2048, 200, 50, 5),
}


def make_features(
    n_total: int,
    n_classes: int,
    samples_per_class: int = 24,
    seed: int = 0,
    duplicate_fraction: float = 0.05,
    dead_fraction: float = 0.01,
) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic CNN-like features (N, F) float32 >= 0 and labels (N,) int64, N = C * spc."""
    if n_total < 2 or n_classes < 1 or samples_per_class < 1:
        raise QPMError(
            f"Cannot make features for F={n_total}, C={n_classes}, "
            f"samples_per_class={samples_per_class}.",
            "Use at least 2 features, 1 class and 1 sample per class.",
        )
    rng = np.random.default_rng(seed)
    F, C = n_total, n_classes
    labels = np.repeat(np.arange(C, dtype=np.int64), samples_per_class)
    rng.shuffle(labels)
    N = labels.size

    # Class mean patterns: shared low-rank structure between related classes ...
    rank = 6
    class_emb = rng.normal(size=(C, rank)) / np.sqrt(rank)
    feat_emb = rng.normal(size=(rank, F))
    mu = 0.4 * np.maximum(class_emb @ feat_emb - 0.8, 0.0)
    # ... plus a sparse set of strongly class-specific features per class.
    active = int(np.clip(3 * F // C, 4, 16))
    for c in range(C):
        feats = rng.choice(F, size=min(active, F), replace=False)
        mu[c, feats] += rng.uniform(0.8, 3.0, size=feats.size)

    gain = rng.lognormal(0.0, 0.25, size=(N, 1))
    nuisance = rng.normal(size=(N, 8)) @ (0.4 * rng.normal(size=(8, F)))
    noise = 0.5 * rng.normal(size=(N, F))
    X = np.maximum(gain * mu[labels] + nuisance + noise - 0.3, 0.0)

    # Near-duplicates: a feature that re-detects another one's concept.
    n_dup = int(round(duplicate_fraction * F))
    if n_dup:
        order = rng.permutation(F)
        dup, src = order[:n_dup], order[n_dup : 2 * n_dup]
        scale = rng.uniform(0.8, 1.2, size=dup.size)
        X[:, dup] = np.maximum(X[:, src] * scale + 0.05 * rng.normal(size=(N, dup.size)), 0.0)
    n_dead = int(round(dead_fraction * F))
    if n_dead:
        X[:, rng.choice(F, size=n_dead, replace=False)] = 0.0
    return X.astype(np.float32), labels


def make_bias(n_total: int, seed: int = 0) -> np.ndarray:
    """A random non-negative locality bias with ``max|b| = 0.316``."""
    rng = np.random.default_rng([seed, 1])
    b = rng.beta(2.0, 5.0, size=n_total)
    return b * (MAX_ABS_BIAS / float(np.abs(b).max()))


def make_instance(size: str = "tiny", seed: int = 0, **problem_kwargs) -> AssignmentProblem:
    """A seeded instance of one of :data:`SIZES`; extra keyword arguments go to the problem."""
    try:
        s = SIZES[size]
    except KeyError:
        raise QPMError(
            f"Unknown synthetic size {size!r}.", f"Choose one of: {', '.join(SIZES)}."
        ) from None
    X, y = make_features(s.n_total, s.n_classes, seed=seed)
    A, R = compute_similarities(X, y, s.n_classes)
    kwargs = {"n_features": s.n_features, "per_class": s.per_class}
    kwargs.update(problem_kwargs)
    return AssignmentProblem(A=A, R=R, b=make_bias(s.n_total, seed), **kwargs)
