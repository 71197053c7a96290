"""The feature-redundancy term: the pairs ``P``, their scaled weights ``R'`` and the default tau.

``R`` may be given as the paper stores it (upper triangle only, zero diagonal) or symmetric;
every function here reads the pair ``{i, j}`` as ``max(R_ij, R_ji)`` so both forms agree.
"""

from __future__ import annotations

import numpy as np

from qpm.assignment.problem import Pairs


def pair_values(R: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The strict upper triangle of ``max(R, R.T)`` as flat ``(i, j, value)`` arrays."""
    R = np.asarray(R, dtype=np.float64)
    i, j = np.triu_indices(R.shape[0], k=1)
    return i, j, np.maximum(R[i, j], R[j, i])


def scale_redundancy(values: np.ndarray, R: np.ndarray) -> np.ndarray:
    """``R' = (R - m) / (M - m)`` with m, M the smallest and largest positive entries of R.

    Values below m (zero or negative, only reachable when tau <= 0) are clipped to 0 so the
    penalty never turns into a reward. If R has a single positive value, R' is 1 there.
    """
    values = np.asarray(values, dtype=np.float64)
    R = np.asarray(R, dtype=np.float64)
    positive = R[R > 0]
    if positive.size == 0:
        return np.zeros_like(values)
    m, M = float(positive.min()), float(positive.max())
    if M == m:
        return np.where(values >= m, 1.0, 0.0)
    return np.clip((values - m) / (M - m), 0.0, None)


def redundancy_pairs(R: np.ndarray, tau: float) -> Pairs:
    """All pairs ``i < j`` with ``R_ij >= tau``, weighted by the scaled ``R'_ij``."""
    i, j, v = pair_values(R)
    keep = np.flatnonzero(v >= tau)
    return Pairs(
        i=i[keep].astype(np.int64),
        j=j[keep].astype(np.int64),
        weight=scale_redundancy(v[keep], R),
    )


def _greedy_independent_size(conflict: np.ndarray, target: int, tie_break: np.ndarray) -> int:
    """Size of a min-degree greedy independent set of ``conflict`` (stops at ``target``).

    Repeatedly keeps the remaining vertex with the fewest remaining conflicts (``tie_break``,
    values in [0, 1), orders equal degrees) and drops it and its neighbours; degrees are
    updated with one row sum per step.
    """
    F = conflict.shape[0]
    alive = np.ones(F, dtype=bool)
    degree = conflict.sum(axis=1).astype(np.float64) + tie_break
    chosen = 0
    while chosen < target and alive.any():
        v = int(np.argmin(np.where(alive, degree, np.inf)))
        chosen += 1
        gone = conflict[v] & alive
        gone[v] = True
        alive &= ~gone
        # Removed vertices no longer count as conflicts of the survivors.
        degree -= conflict[gone].sum(axis=0)
    return chosen


GREEDY_TRIES = 4  # min-degree greedy runs per threshold: index order, then 3 seeded tie-breaks


def default_tau(R: np.ndarray, n: int) -> float:
    """The smallest tau at which n features with all pairwise ``R_ij < tau`` can still be found.

    Exactly what is done: the candidate thresholds are the sorted distinct values of the
    pair values ``max(R_ij, R_ji)``, i < j, followed by one value just above the largest
    (``np.nextafter(max, inf)``, where no pair conflicts and any n features qualify). For a
    candidate tau, the conflict graph joins i and j when their pair value is ``>= tau`` (its
    complement is the graph "R_ij < tau"). A tau is accepted when a min-degree greedy
    independent set of the conflict graph (a clique of the complement) reaches n features in
    one of ``GREEDY_TRIES`` runs: equal degrees broken by index, then by three fixed-seed
    random orders. A binary search over the candidates returns the smallest accepted tau.
    The greedy may miss a set that exists, so the result is an upper bound on the true
    smallest threshold (on random 10-feature graphs it is exact about 5 times in 6);
    acceptance is treated as monotone in tau, as the true property is. About 1 s at F=2048.
    """
    R = np.asarray(R, dtype=np.float64)
    F = R.shape[0]
    n = int(n)
    if F < 2:
        return 0.0
    sym = np.maximum(R, R.T)
    np.fill_diagonal(sym, -np.inf)  # a feature never conflicts with itself
    _, _, v = pair_values(R)
    values = np.unique(v)
    candidates = np.append(values, np.nextafter(values[-1], np.inf))
    rng = np.random.default_rng(0)
    tie_breaks = [np.zeros(F)] + [rng.uniform(0.0, 0.999, F) for _ in range(GREEDY_TRIES - 1)]

    def feasible(idx: int) -> bool:
        conflict = sym >= candidates[idx]
        return any(_greedy_independent_size(conflict, n, t) >= n for t in tie_breaks)

    lo, hi = 0, candidates.size - 1  # hi is always feasible (no conflicts at all)
    while lo < hi:
        mid = (lo + hi) // 2
        if feasible(mid):
            hi = mid
        else:
            lo = mid + 1
    return float(candidates[hi])
