"""Seeded synthetic assignment instances from several families of feature statistics.

Every family makes non-negative CNN-like features (N, F) and labels; A and R then come from
the paper's preprocessing (:func:`~qpm.assignment.similarities.compute_similarities`), so
the instances carry the structure a real run would (dead features, near-duplicates,
redundancy). The families differ in how classes use features, which is what makes an
instance easy or hard for the solvers:

* ``default``: class means with a shared low-rank part plus a sparse set of strongly
  class-specific features, a shared nuisance, an overall gain, 5% near-duplicates, 1% dead.
* ``sparse``: each class lifts only one to three features (sparse class lifts); most
  features are noise, so A is nearly sparse and classes compete for few good features.
* ``lowrank``: every feature is a ReLU of a few shared latent concepts, so many features
  are redundant (R is dense and high) and A has few distinct profiles.
* ``heavytail``: class lifts with Pareto amplitudes on features whose reach is Zipf
  distributed: a few hub features matter to many classes, most to few (heavy-tailed A).
* ``groups``: classes come in groups of ten that share most of their features (as
  fine-grained birds do); each class adds one or two weak features of its own, so classes
  want the same top-k sets and uniqueness binds.
* :func:`expand_features` turns real features (a run's ``features.npz``) into a larger
  instance: random ReLU features of the real ones and sub-classes found by k-means
  inside each real class.
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
    "imagenet": Size(2048, 1000, 50, 5),
}


def _check_sizes(n_total: int, n_classes: int, samples_per_class: int) -> None:
    if n_total < 2 or n_classes < 1 or samples_per_class < 1:
        raise QPMError(
            f"Cannot make features for F={n_total}, C={n_classes}, "
            f"samples_per_class={samples_per_class}.",
            "Use at least 2 features, 1 class and 1 sample per class.",
        )


def _labels(rng: np.random.Generator, C: int, spc: int) -> np.ndarray:
    labels = np.repeat(np.arange(C, dtype=np.int64), spc)
    rng.shuffle(labels)
    return labels


def _finish(rng: np.random.Generator, X: np.ndarray, duplicate_fraction: float,
            dead_fraction: float) -> np.ndarray:
    """Near-duplicates (a feature that re-detects another one's concept) and dead features."""
    N, F = X.shape
    n_dup = int(round(duplicate_fraction * F))
    if n_dup:
        order = rng.permutation(F)
        dup, src = order[:n_dup], order[n_dup : 2 * n_dup]
        scale = rng.uniform(0.8, 1.2, size=dup.size)
        X[:, dup] = np.maximum(X[:, src] * scale + 0.05 * rng.normal(size=(N, dup.size)), 0.0)
    n_dead = int(round(dead_fraction * F))
    if n_dead:
        X[:, rng.choice(F, size=n_dead, replace=False)] = 0.0
    return X.astype(np.float32)


def _default_means(rng: np.random.Generator, F: int, C: int) -> np.ndarray:
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
    return mu


def _sparse_means(rng: np.random.Generator, F: int, C: int) -> np.ndarray:
    mu = np.zeros((C, F))
    for c in range(C):
        feats = rng.choice(F, size=int(rng.integers(1, 4)), replace=False)
        mu[c, feats] += rng.lognormal(0.5, 0.5, size=feats.size)
    return mu


def _heavytail_means(rng: np.random.Generator, F: int, C: int) -> np.ndarray:
    # Reach of feature f ~ Zipf: the hubs matter to many classes; amplitudes ~ Pareto.
    reach = np.minimum(rng.zipf(1.8, size=F), C)
    mu = np.zeros((C, F))
    for f in np.flatnonzero(rng.random(F) < 0.6):
        cls = rng.choice(C, size=int(reach[f]), replace=False)
        mu[cls, f] += 0.3 * (rng.pareto(1.5, size=cls.size) + 1.0)
    return np.minimum(mu, 12.0)


def _groups_means(rng: np.random.Generator, F: int, C: int, group: int = 10) -> np.ndarray:
    n_groups = -(-C // group)
    mu = np.zeros((C, F))
    for g in range(n_groups):
        members = np.arange(g * group, min(C, (g + 1) * group))
        shared = rng.choice(F, size=12, replace=False)
        mu[np.ix_(members, shared)] += rng.uniform(0.8, 2.0, size=shared.size)
        for c in members:
            own = rng.choice(F, size=int(rng.integers(1, 3)), replace=False)
            mu[c, own] += rng.uniform(0.3, 0.9, size=own.size)
    return mu


def _lowrank_features(rng: np.random.Generator, labels: np.ndarray, F: int, C: int
                      ) -> np.ndarray:
    rank = 12
    class_emb = rng.normal(size=(C, rank))
    z = class_emb[labels] + 0.7 * rng.normal(size=(labels.size, rank))
    mix = rng.normal(size=(rank, F)) * (rng.random((rank, F)) < 0.35)
    X = np.maximum(z @ mix / np.sqrt(rank * 0.35) + 0.3 * rng.normal(size=(labels.size, F))
                   - 0.5, 0.0)
    return X


_MEANS = {
    "default": _default_means,
    "sparse": _sparse_means,
    "heavytail": _heavytail_means,
    "groups": _groups_means,
}
FAMILIES: tuple[str, ...] = ("default", "sparse", "lowrank", "heavytail", "groups")


def make_features(
    n_total: int,
    n_classes: int,
    samples_per_class: int = 24,
    seed: int = 0,
    duplicate_fraction: float = 0.05,
    dead_fraction: float = 0.01,
    family: str = "default",
) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic CNN-like features (N, F) float32 >= 0 and labels (N,) int64, N = C * spc."""
    _check_sizes(n_total, n_classes, samples_per_class)
    if family not in FAMILIES:
        raise QPMError(f"Unknown instance family {family!r}.",
                       f"Choose one of: {', '.join(FAMILIES)}.")
    # The default family keeps the random stream it always had (seeded instances stay).
    rng = np.random.default_rng(seed if family == "default" else [seed, FAMILIES.index(family)])
    F, C = n_total, n_classes
    labels = _labels(rng, C, samples_per_class)
    N = labels.size
    if family == "lowrank":
        return _finish(rng, _lowrank_features(rng, labels, F, C), duplicate_fraction,
                       dead_fraction), labels
    mu = _MEANS[family](rng, F, C)
    gain = rng.lognormal(0.0, 0.25, size=(N, 1))
    nuisance = rng.normal(size=(N, 8)) @ (0.4 * rng.normal(size=(8, F)))
    noise = 0.5 * rng.normal(size=(N, F))
    X = np.maximum(gain * mu[labels] + nuisance + noise - 0.3, 0.0)
    return _finish(rng, X, duplicate_fraction, dead_fraction), labels


def _kmeans(rng: np.random.Generator, X: np.ndarray, k: int, iters: int = 20) -> np.ndarray:
    """Plain Lloyd k-means labels (every cluster kept non-empty by re-seeding)."""
    centres = X[rng.choice(X.shape[0], size=k, replace=False)]
    for _ in range(iters):
        d = (X * X).sum(1)[:, None] - 2.0 * X @ centres.T + (centres * centres).sum(1)[None, :]
        assign = np.argmin(d, axis=1)
        for j in range(k):
            members = assign == j
            centres[j] = X[members].mean(0) if members.any() else X[rng.integers(X.shape[0])]
    return assign


def expand_features(features: np.ndarray, labels: np.ndarray, n_total: int, n_classes: int,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A larger instance from real features: F random ReLU features of them, C sub-classes.

    Each real class is split by k-means (on the real features) into an equal share of the
    ``n_classes`` sub-classes, the way one species splits into similar-looking sub-species;
    the new features are ``relu(x W + c)`` of the standardised real features, so they keep
    the real features' correlations (and are as redundant as a wider layer on them would be).
    """
    X = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    real = np.unique(y)
    if n_classes < real.size:
        raise QPMError(f"Cannot expand {real.size} real classes into only {n_classes}.",
                       f"Use at least {real.size} classes.")
    rng = np.random.default_rng([seed, 99])
    Z = (X - X.mean(0)) / np.maximum(X.std(0), 1e-12)
    W = rng.normal(size=(X.shape[1], n_total)) / np.sqrt(X.shape[1])
    c = rng.normal(-0.5, 0.5, size=n_total)
    new_labels = np.empty_like(y)
    share = np.array_split(np.arange(n_classes), real.size)
    for r, ids in zip(real.tolist(), share, strict=True):
        rows = np.flatnonzero(y == r)
        k = min(ids.size, rows.size)
        new_labels[rows] = ids[_kmeans(rng, Z[rows], k)] if k > 1 else ids[0]
    used = np.unique(new_labels)  # renumber: classes k-means left empty disappear
    new_labels = np.searchsorted(used, new_labels)
    return np.maximum(Z @ W + c, 0.0).astype(np.float32), new_labels


def make_bias(n_total: int, seed: int = 0) -> np.ndarray:
    """A random non-negative locality bias with ``max|b| = 0.316``."""
    rng = np.random.default_rng([seed, 1])
    b = rng.beta(2.0, 5.0, size=n_total)
    return b * (MAX_ABS_BIAS / float(np.abs(b).max()))


def make_instance(size: str = "tiny", seed: int = 0, family: str = "default",
                  **problem_kwargs) -> AssignmentProblem:
    """A seeded instance of one of :data:`SIZES` and :data:`FAMILIES`; extra keyword
    arguments go to the problem."""
    try:
        s = SIZES[size]
    except KeyError:
        raise QPMError(
            f"Unknown synthetic size {size!r}.", f"Choose one of: {', '.join(SIZES)}."
        ) from None
    X, y = make_features(s.n_total, s.n_classes, seed=seed, family=family)
    A, R = compute_similarities(X, y, s.n_classes)
    del X
    kwargs = {"n_features": s.n_features, "per_class": s.per_class}
    kwargs.update(problem_kwargs)
    return AssignmentProblem(A=A, R=R, b=make_bias(s.n_total, seed), **kwargs)
