"""The forced class pairs of the ``chiqpm`` preset (CHiQPM, NeurIPS 2025).

CHiQPM asks the ⌊ρ·C⌋ most similar pairs of classes to share exactly k−1 of their k features,
so that each such pair differs in one feature each and the global explanation contrasts them
by a single feature. "Most similar" is read as the CHiQPM reference code computes it
(``sparsification/chiqpm/find_pairs.py``, called with ``A.T``): the Euclidean distance between
the classes' columns of A (each class's correlation with every candidate feature), divided by
the largest such distance, smallest first. The count is ``int(C * rho)`` (the float product,
truncated), as there. Ties go to the pair the reference's row-major scan of its lower triangle
meets first (the larger class index, then the smaller); the reference sorts with numpy's
default (unstable) argsort, so its order among exact ties is unspecified.

Two k-sets share k−1 features exactly when one is the other with one feature swapped: they
are neighbours in the Johnson graph J(n, k). Whether the pair graph can be drawn into J(n, k)
with every class on its own set does not depend on which n features are selected, so it is
checked once, before any solve (:func:`check_request`; the search is in
:mod:`qpm.assignment.pair_search`).
"""

from __future__ import annotations

import math

import numpy as np

from qpm.errors import QPMError
from qpm.text import printable

DEFAULT_RHO = 0.5  # the reference's finetune_chiqpm


def pair_count(n_classes: int, rho: float) -> int:
    """⌊ρ·C⌋ as the reference computes it: ``int(C * rho)``."""
    return int(n_classes * rho)


def class_distances(A: np.ndarray) -> np.ndarray:
    """(C, C) Euclidean distances between the columns of ``A``, divided by the largest.

    Computed from the differences themselves, one class at a time (no Gram-matrix shortcut,
    whose cancellation would scramble the smallest distances, the ones that matter here).
    """
    A = np.asarray(A, dtype=np.float64)
    C = A.shape[1]
    D = np.zeros((C, C))
    for i in range(1, C):
        diff = A[:, :i] - A[:, i:i + 1]
        D[i, :i] = np.sqrt(np.einsum("fc,fc->c", diff, diff))
    D = D + D.T
    top = D.max()
    return D / top if top > 0 else D


def closest_pairs(A: np.ndarray, rho: float) -> np.ndarray:
    """The ``int(C * rho)`` closest class pairs as a (P, 2) int array ``(smaller, larger)``,
    closest first (ties: larger index first, then smaller, the reference's scan order)."""
    C = np.asarray(A).shape[1]
    count = pair_count(C, rho)
    if count <= 0:
        return np.zeros((0, 2), dtype=np.int64)
    D = class_distances(A)
    hi, lo = np.tril_indices(C, k=-1)  # row > column: the reference's lower triangle
    order = np.lexsort((lo, hi, D[hi, lo]))[:count]
    return np.stack([lo[order], hi[order]], axis=1).astype(np.int64)


def check_rho(rho: float, n_classes: int, per_class: int) -> None:
    """QPMError for a ρ outside [0, 1], more pairs than the classes have, or k = 1."""
    if isinstance(rho, bool) or not isinstance(rho, (int, float)) or not math.isfinite(rho) \
            or not 0 <= rho <= 1:
        raise QPMError(f"rho must be a number in [0, 1], got {rho!r}.",
                       f"Use e.g. --rho {DEFAULT_RHO} (the reference's): int(rho * C) class "
                       "pairs are forced to share k-1 features.")
    count = pair_count(n_classes, rho)
    if count > n_classes * (n_classes - 1) // 2:
        raise QPMError(f"rho={rho} asks for {count} class pairs, but {n_classes} classes have "
                       f"only {n_classes * (n_classes - 1) // 2}.", "Use a smaller --rho.")
    if count and per_class < 2:
        raise QPMError(f"The chiqpm preset forces {count} class pair(s) to share k-1 = "
                       f"{per_class - 1} features; with k = {per_class} that says nothing "
                       "(distinct classes share no feature anyway).",
                       "Use --per-class 2 or more, or --rho 0.")


def check_request(pairs: np.ndarray, n_classes: int, n_features: int, per_class: int,
                  class_names: tuple[str, ...] | None = None) -> None:
    """QPMError when the forced pairs cannot all share k−1 features with every class on its
    own set of k of the n features; silent when they can or the search gives up undecided.

    A class in d forced pairs needs d distinct neighbours of its set in J(n, k), which has
    k·(n−k) of them; beyond that, the embedding search decides (exhaustively on small
    instances: a proof of infeasibility there).
    """
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if not len(pairs):
        return
    n, k = n_features, per_class
    degree = np.bincount(pairs.ravel(), minlength=n_classes)
    worst = int(np.argmax(degree))
    room = k * (n - k)
    if degree[worst] > room:
        name = printable(class_names[worst]) if class_names else str(worst)
        raise QPMError(f"Class {name} is in {int(degree[worst])} forced pairs, but a set of "
                       f"k={k} of n={n} features has only k*(n-k) = {room} sets that share "
                       f"k-1 = {k - 1} features with it.",
                       "Use a smaller --rho, or more --n-features.")
    from qpm.assignment.pair_search import embeddable

    if embeddable(pairs, n_classes, n, k) is False:
        raise QPMError(f"The {len(pairs)} forced class pairs cannot all share k-1 = {k - 1} "
                       f"features while all {n_classes} classes keep distinct sets of k={k} "
                       f"of n={n} features (an exhaustive search found no way).",
                       "Use a smaller --rho, or more --n-features.")
