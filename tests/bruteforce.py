"""An exact brute-force solver for tiny assignment instances (the tests' ground truth).

It enumerates every selection of n features and, for each, finds the best assignment under
the preset's rules with methods unrelated to the solvers under test:

* per class exactly k, no uniqueness: every class takes its k largest selected values;
* per class exactly k, unique columns: a rectangular assignment problem (classes x all
  k-subsets of the selection), solved exactly with scipy's linear_sum_assignment;
* budget C*k with >= 1 per class: every class takes its best selected feature, then the
  C*k - C largest remaining selected values;
* forced class pairs (chiqpm): every tuple of distinct k-subsets, one per class, in which each
  forced pair shares exactly k-1 features (depth first over the classes), and the forced pairs
  themselves from a plain double loop over the classes' column distances.

The objective is computed here from the formula, not by the package. Sized for instances
like F=8, C=4, n=4, k=2 (well under a second).
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
from scipy.optimize import linear_sum_assignment

from qpm.assignment.problem import AssignmentProblem


def _penalty(problem: AssignmentProblem, sel: tuple[int, ...]) -> float:
    rules = problem.rules
    R = problem.R
    if not rules.redundancy or R is None or problem.redundancy_weight == 0:
        return 0.0
    positive = R[R > 0]
    lo, hi = positive.min(), positive.max()
    total = 0.0
    for a, b in combinations(sel, 2):
        r = max(R[a, b], R[b, a])
        if r >= problem.tau:
            total += (1.0 if hi == lo else max((r - lo) / (hi - lo), 0.0))
    return problem.redundancy_weight * total


def closest_pairs(A: np.ndarray, rho: float) -> set[tuple[int, int]]:
    """The int(rho * C) closest class pairs (smaller, larger); exact ties are not expected."""
    C = A.shape[1]
    dist = sorted((float(np.sqrt(((A[:, a] - A[:, b]) ** 2).sum())), a, b)
                  for a in range(C) for b in range(a + 1, C))
    return {(a, b) for _, a, b in dist[: int(C * rho)]}


def _paired_sets(AS: np.ndarray, k: int, pairs: set[tuple[int, int]]
                 ) -> tuple[float, list[tuple[int, ...]]] | None:
    C = AS.shape[1]
    subsets = list(combinations(range(AS.shape[0]), k))
    value = [[float(AS[list(s), c].sum()) for s in subsets] for c in range(C)]
    best: list = [-np.inf, None]

    def go(c: int, chosen: list[int], total: float) -> None:
        if c == C:
            if total > best[0]:
                best[:] = [total, [subsets[i] for i in chosen]]
            return
        for i, s in enumerate(subsets):
            if i in chosen:
                continue
            if any(len(set(s) & set(subsets[chosen[a]])) != k - 1
                   for a in range(c) if (a, c) in pairs):
                continue
            go(c + 1, chosen + [i], total + value[c][i])

    go(0, [], 0.0)
    return None if best[1] is None else (best[0], best[1])


def best_assignment(problem: AssignmentProblem, sel: tuple[int, ...]
                    ) -> tuple[float, np.ndarray | None]:
    rules = problem.rules
    A = problem.A
    F, C = A.shape
    k = problem.per_class
    idx = np.array(sel)
    AS = A[idx]
    use = np.zeros((len(sel), C), dtype=bool)
    if rules.forced_pairs:
        found = _paired_sets(AS, k, closest_pairs(A, problem.rho))
        if found is None:
            return -np.inf, None
        for c, s in enumerate(found[1]):
            use[list(s), c] = True
    elif rules.per_class_exact and rules.unique_columns:
        subsets = list(combinations(range(len(sel)), k))
        gain = np.array([[AS[list(s), c].sum() for s in subsets] for c in range(C)])
        rows, cols = linear_sum_assignment(gain, maximize=True)
        for c, s in zip(rows, cols, strict=True):
            use[list(subsets[s]), c] = True
    elif rules.per_class_exact:
        for c in range(C):
            use[np.argsort(-AS[:, c])[:k], c] = True
    else:
        for c in range(C):
            use[int(np.argmax(AS[:, c])), c] = True
        rest = [(AS[i, c], i, c) for i in range(len(sel)) for c in range(C) if not use[i, c]]
        rest.sort(reverse=True)
        for _, i, c in rest[: C * k - C]:
            use[i, c] = True
    w = np.zeros((F, C), dtype=np.uint8)
    w[idx] = use
    return float((AS * use).sum()), w


def brute_force(problem: AssignmentProblem) -> tuple[float, np.ndarray, np.ndarray]:
    """(optimal objective, selected feature indices, (F, C) matrix) by full enumeration."""
    F, C = problem.A.shape
    k = problem.per_class
    scale = 1000.0 / (k * C)
    bias = problem.b if problem.b is not None else np.zeros(F)
    best = (-np.inf, None, None)
    for sel in combinations(range(F), problem.n_features):
        sim, w = best_assignment(problem, sel)
        value = scale * sim + float(bias[list(sel)].sum()) - _penalty(problem, sel)
        if value > best[0]:
            best = (value, np.array(sel), w)
    return best
