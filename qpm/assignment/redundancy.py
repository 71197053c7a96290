"""The feature-redundancy term: the pairs ``P``, their scaled weights ``R'`` and the tau rules.

``R`` may be given as the paper stores it (upper triangle only, zero diagonal) or symmetric;
every function here reads the pair ``{i, j}`` as ``max(R_ij, R_ji)`` so both forms agree.

When no tau is given, a named rule picks it (:data:`TAU_RULES`): ``paper`` (the default) is
the reference implementation's "minimum viable threshold" search, ``tight`` the smallest
threshold a greedy independent-set search still accepts (it penalises 40-55% more pairs).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from qpm.assignment.cliques import clique_removal_independent_size, greedy_clique_size
from qpm.errors import QPMError


@dataclass(frozen=True)
class Pairs:
    """The redundancy pairs ``P``: indices ``i < j`` and their scaled weights ``R'_ij``."""

    i: np.ndarray
    j: np.ndarray
    weight: np.ndarray

    def __len__(self) -> int:
        return int(self.i.size)

DEFAULT_TAU_RULE = "paper"
TAU_RULES: dict[str, Callable[[np.ndarray, int], float]] = {}


def register_tau_rule(name: str) -> Callable:
    """Register ``rule(R, n) -> tau`` under ``name`` (a decorator)."""

    def add(rule: Callable[[np.ndarray, int], float]) -> Callable[[np.ndarray, int], float]:
        TAU_RULES[name] = rule
        return rule

    return add


def check_tau_rule(name: str) -> str:
    """``name`` if it is a registered rule, else a QPMError listing the rules."""
    if name not in TAU_RULES:
        raise QPMError(
            f"Unknown tau rule {name!r}.", f"Choose one of: {', '.join(sorted(TAU_RULES))}."
        )
    return name


def default_tau(R: np.ndarray, n: int, rule: str = DEFAULT_TAU_RULE) -> float:
    """tau under the named rule (:data:`TAU_RULES`) for selecting ``n`` features."""
    return float(TAU_RULES[check_tau_rule(rule)](R, n))


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


@register_tau_rule("tight")
def tight_tau(R: np.ndarray, n: int) -> float:
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


PAPER_STEPS = 100  # quantile steps of the reference's search


def _symmetric_pairs(R: np.ndarray) -> np.ndarray:
    """``max(R, R.T)`` with negatives and the diagonal set to 0: every pair value, twice."""
    R = np.asarray(R, dtype=np.float64)
    sym = np.maximum(np.maximum(R, R.T), 0.0)
    np.fill_diagonal(sym, 0.0)
    return sym


@register_tau_rule("paper")
def paper_tau(R: np.ndarray, n: int, steps: int = PAPER_STEPS) -> float:
    """The reference implementation's "minimum viable threshold" for selecting n features.

    Exactly what is done, on the F x F matrix of pair values (both triangles, zero
    diagonal, sorted as ``v``; a feature pair is non-redundant at threshold t when its value
    is < t):

    1. Start at the Turan-style estimate ``v[floor(F^2 (n-2)/(n-1))]`` (with that share of
       entries below it, a graph this dense must hold n mutually non-redundant features) and
       walk down through the positive entries in ``steps`` equal index steps, to the first
       positive value. At each new threshold the greedy clique heuristic
       (:func:`~qpm.assignment.cliques.greedy_clique_size`) looks for n mutually
       non-redundant features; the walk stops at the first threshold where it finds fewer
       (keeping the previous one) or exactly n (keeping this one).
    2. From there, walk back up the same steps until the clique-removal heuristic
       (:func:`~qpm.assignment.cliques.clique_removal_independent_size`), which the
       reference uses to build its start solution, finds n features; that threshold is tau.

    For n < 3 the estimate is undefined and the ``tight`` rule answers; so it does when R
    has so few positive entries that the walk would not move (then hardly any pair is
    redundant). The penalised pairs are those with ``R_ij >= tau``; tau is scale-free in R
    (a multiple of R gives the same pairs and the same multiple of tau).
    """
    sym = _symmetric_pairs(R)
    F, n = sym.shape[0], int(n)
    total = F * F
    desired = total * (n - 2) / (n - 1) if n >= 3 else 0.0
    step = (desired - (total - np.count_nonzero(sym))) / steps
    if F < 3 or n < 3 or step <= 0:
        return tight_tau(R, n)
    values = np.sort(sym, axis=None)
    start = int(np.floor(desired))
    above_all = float(np.nextafter(values[-1], np.inf))

    def threshold(k: int) -> float:  # k index steps down from the estimate (k < 0: up)
        idx = start - int(k * step)
        return above_all if idx >= total else float(values[max(idx, 0)])

    chosen, last_edges = steps - 1, 0
    for i in range(steps):
        adjacent = sym < threshold(i)
        np.fill_diagonal(adjacent, False)
        edges = int(adjacent.sum())
        if edges == last_edges:  # same graph as the step before
            continue
        last_edges = edges
        size = greedy_clique_size(adjacent, n)
        if size < n:
            chosen = i - 1
            break
        if size == n:
            chosen = i
            break
    k = chosen
    while True:
        t = threshold(k)
        if t == above_all:
            return t
        conflict = sym >= t
        np.fill_diagonal(conflict, False)
        if clique_removal_independent_size(conflict, n) >= n:
            return t
        k -= 1
