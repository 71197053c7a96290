"""``topk``: the Lagrangian bound of the problem without its redundancy penalty.

For any thresholds ``lam`` (one per class) and any feasible assignment, class c's value is at
most ``k*lam_c + sum_{i selected} max(A_ic - lam_c, 0)`` (it uses k selected features, each
worth ``lam_c`` plus its excess), the penalty is >= 0 and ``b`` is summed over the selection,
so with ``g_i = b_i + scale * sum_c max(A_ic - lam_c, 0)``::

    optimum  <=  scale * k * sum_c lam_c  +  (sum of the n largest g_i)

for EVERY lam: a valid bound whatever lam is. Presets with a total budget of C*k (at least
one per class) get one shared threshold: ``scale * C*k * lam + top-n g`` with
``g_i = b_i + scale * sum_c max(A_ic - lam, 0)``. The thresholds are improved by block
descent: for the n features the bound picks, each class's best threshold is its k-th largest
value among them (the budget's: the C*k-th largest pair); the smallest value seen is returned.
At a fixed point the bound equals that selection's value without penalty, so it converges to
(about) the optimum of the problem without redundancy: cheap, always valid, weak wherever the
penalty matters.
"""

from __future__ import annotations

import time

import numpy as np

from qpm.assignment.bounds import Bound, BoundOptions

MAX_ROUNDS = 200
SUBGRADIENT_STEPS = 100


def topk_bound(problem, opts: BoundOptions) -> Bound:
    A, b = problem.A, problem.bias
    F, C = A.shape
    n, k, scale = problem.n_features, problem.per_class, problem.scale
    per_class = problem.rules.per_class_exact
    deadline = None if opts.time_limit is None else time.perf_counter() + opts.time_limit

    def thresholds(rows: np.ndarray):
        block = A[rows]
        if per_class:  # each class's k-th largest value among the rows
            return -np.partition(-block, k - 1, axis=0)[k - 1]
        flat = block.ravel()
        return float(-np.partition(-flat, C * k - 1)[C * k - 1])

    # k per class: sum_c k*lam_c; budget: C*k*lam (one threshold).
    def bound_at(lam) -> tuple[float, np.ndarray]:
        g = b + scale * np.maximum(A - lam, 0.0).sum(axis=1)
        top = np.argpartition(-g, n - 1)[:n]
        slots = k * float(np.sum(lam)) if per_class else C * k * float(lam)
        return scale * slots + float(g[top].sum()), top

    # Block descent: each selection's own best thresholds, until a selection repeats.
    lam = thresholds(np.arange(F))
    best, rounds, floor = np.inf, 0, -np.inf
    seen: set[bytes] = set()
    while rounds < MAX_ROUNDS:
        rounds += 1
        value, top = bound_at(lam)
        best = min(best, value)
        key = np.sort(top).tobytes()
        if key in seen or _late(deadline):
            break
        seen.add(key)
        lam = thresholds(top)
        # A selection's value without penalty bounds the minimum from below (Polyak target).
        floor = max(floor, _plain_value(problem, top, per_class))
    # Subgradient steps on the thresholds (Polyak steps towards the best selection's value).
    for _ in range(SUBGRADIENT_STEPS):
        if _late(deadline) or best - floor <= 1e-9 * max(1.0, abs(best)):
            break
        value, top = bound_at(lam)
        best = min(best, value)
        above = (A[top] > lam).sum(axis=0) if per_class else int((A[top] > lam).sum())
        grad = scale * ((k - above) if per_class else C * k - above)
        norm = float(np.sum(np.square(grad)))
        if norm == 0:
            break
        lam = lam - (value - floor) / norm * grad
        rounds += 1
    return Bound(best, "topk", 0.0, f"{rounds} threshold step(s), penalty dropped")


def _late(deadline: float | None) -> bool:
    return deadline is not None and time.perf_counter() > deadline


def _plain_value(problem, rows: np.ndarray, per_class: bool) -> float:
    """The value of selecting ``rows`` without the penalty (per class its k best; budget:
    the C*k best pairs): a feasible value of the relaxation, so a lower bound of its minimum."""
    A = problem.A[rows]
    k, C = problem.per_class, problem.n_classes
    if per_class:
        top = -np.partition(-A, k - 1, axis=0)[:k]
    else:
        top = -np.partition(-A.ravel(), C * k - 1)[: C * k]
    return problem.scale * float(top.sum()) + float(problem.bias[rows].sum())
