"""A fast heuristic for the assignment: greedy selection, 1-swap local search, repair.

For a fixed selection S the best per-class-exact assignment (ignoring uniqueness) lets every
class take its k largest selected A values, so a selection is worth (the "surrogate")::

    scale * sum_c topk_{i in S} A_ic  -  weight * sum_{pairs in S} R'_ij  +  sum_{i in S} b_i

The greedy adds the feature with the largest marginal gain of that value; the local search
then applies the best 1-swap (one feature out, one in) while it improves, scoring all
n*(F-n) swaps at once with one sparse-dense product. The final assignment obeys the preset's
rules: duplicate columns are repaired (:mod:`qpm.assignment.repair`), budget rules
("unbalanced") use the optimal greedy allocation of the C*k slots, and forced class pairs
(chiqpm) get sets one swap apart (:mod:`qpm.assignment.pair_search`). Where those rules make the
true value differ from the surrogate, a second swap search scores the most promising swaps
with the true value. Multi-start perturbs the best selection and keeps the best.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from qpm.assignment.pair_search import pair_assignment
from qpm.assignment.presets import Rules
from qpm.assignment.problem import AssignmentProblem
from qpm.assignment.repair import greedy_unique_columns, unique_columns

_IMPROVE = 1e-9  # a swap must gain more than this (relative) to count, so ties cannot cycle


@dataclass
class HeuristicSolution:
    """Sorted selected feature indices, the (F, C) uint8 assignment and its objective.

    ``matrix`` is None (objective -inf) when no assignment obeying the preset's rules was
    found, which only forced pairs that cannot all be met can cause.
    """

    selected: np.ndarray
    matrix: np.ndarray | None
    objective: float
    restarts: int = 1
    seconds: float = 0.0

    @property
    def mask(self) -> np.ndarray:
        """The selection as an (F,) bool mask."""
        mask = np.zeros(self.matrix.shape[0], dtype=bool)
        mask[self.selected] = True
        return mask


def _penalty_matrix(problem: AssignmentProblem) -> np.ndarray | None:
    """Dense symmetric weight * R' over the pairs P, or None without redundancy."""
    pairs = problem.pairs()
    if not len(pairs):
        return None
    F = problem.n_total
    W = np.zeros((F, F))
    w = problem.redundancy_weight * pairs.weight
    W[pairs.i, pairs.j] = w
    W[pairs.j, pairs.i] = w
    return W


class _Search:
    """The surrogate value of selections (top-k per class) and its greedy / swap search."""

    def __init__(self, problem: AssignmentProblem) -> None:
        self.A = problem.A
        self.AT = np.ascontiguousarray(problem.A.T)
        self.b = problem.bias
        self.k = problem.per_class
        self.n = problem.n_features
        self.scale = problem.scale
        self.W = _penalty_matrix(problem)

    def value(self, sel: np.ndarray) -> float:
        AS = self.A[sel]
        top = -np.partition(-AS, self.k - 1, axis=0)[: self.k]
        v = self.scale * float(top.sum()) + float(self.b[sel].sum())
        if self.W is not None:
            v -= 0.5 * float(self.W[np.ix_(sel, sel)].sum())
        return v

    def greedy(self) -> np.ndarray:
        """Add, n times, the feature with the largest marginal surrogate gain."""
        F, C = self.A.shape
        chosen: list[int] = []
        taken = np.zeros(F, dtype=bool)
        pen = np.zeros(F)
        for step in range(self.n):
            if step < self.k:
                cls_gain = self.A.sum(axis=1)  # the class still has free slots: forced
            else:
                AS = self.A[chosen]
                kth = -np.partition(-AS, self.k - 1, axis=0)[self.k - 1]
                cls_gain = np.maximum(self.A - kth, 0.0).sum(axis=1)
            gain = self.scale * cls_gain + self.b - pen
            gain[taken] = -np.inf
            f = int(np.argmax(gain))
            chosen.append(f)
            taken[f] = True
            if self.W is not None:
                pen += self.W[:, f]
        return np.array(chosen, dtype=np.int64)

    def swap_gains(self, sel: np.ndarray, pen: np.ndarray) -> np.ndarray:
        """Gain (n, F) of replacing sel[a] by feature j, for every a and j (−inf for j in S)."""
        A, k = self.A, self.k
        AS = A[sel]
        order = np.argsort(-AS, axis=0, kind="stable")
        in_top = np.zeros_like(AS, dtype=bool)
        np.put_along_axis(in_top, order[:k], True, axis=0)
        cols = np.arange(AS.shape[1])
        t_k = AS[order[k - 1], cols]  # the weakest feature a class uses
        u = AS[order[k], cols] if sel.size > k else np.full(AS.shape[1], -np.inf)
        # Out i in the top-k: the class takes max(A_jc, next best); else j only beats t_k.
        # in_top has only k ones per class, so it multiplies as a sparse matrix, and
        # (1 - in_top) @ Q.T = sum_c Q_jc - in_top @ Q.T.
        # Class-major (C, F) arrays keep the sparse product on contiguous rows.
        top = sparse.csr_matrix(in_top.astype(np.float64))
        QT = np.maximum(self.AT - t_k[:, None], 0.0)
        gain = np.asarray(top @ (np.maximum(self.AT, u[:, None]) - QT))
        gain -= (in_top * AS).sum(axis=1)[:, None]
        gain += QT.sum(axis=0)[None, :]
        gain *= self.scale
        gain += self.b[None, :] - self.b[sel][:, None]
        if self.W is not None:
            gain -= pen[None, :] - self.W[sel] - pen[sel][:, None]
        gain[:, sel] = -np.inf
        return gain

    def local_search(self, sel: np.ndarray, deadline: float | None = None) -> np.ndarray:
        """Best-improvement 1-swaps until none improves (or the deadline passes)."""
        sel = sel.copy()
        pen = self.W[:, sel].sum(axis=1) if self.W is not None else None
        value = self.value(sel)
        while deadline is None or time.perf_counter() < deadline:
            gain = self.swap_gains(sel, pen)
            a, j = np.unravel_index(int(np.argmax(gain)), gain.shape)
            if gain[a, j] <= _IMPROVE * max(abs(value), 1.0):
                break
            if self.W is not None:
                pen += self.W[:, j] - self.W[:, sel[a]]
            sel[a] = j
            value += float(gain[a, j])
        return sel


def _top_k_matrix(A: np.ndarray, sel: np.ndarray, k: int) -> np.ndarray:
    F, C = A.shape
    order = np.argsort(-A[sel], axis=0, kind="stable")[:k]
    w = np.zeros((F, C), dtype=np.uint8)
    w[sel[order], np.arange(C)[None, :]] = 1
    return w


def _budget_use(AS: np.ndarray, k: int) -> np.ndarray:
    """Optimal (n, C) use for total C*k with >= 1 per class: class maxima, then the largest rest."""
    C = AS.shape[1]
    use = np.zeros_like(AS, dtype=bool)
    use[np.argmax(AS, axis=0), np.arange(C)] = True
    rest = C * k - C
    if rest > 0:
        flat = np.where(use, -np.inf, AS).ravel()
        use.ravel()[np.argpartition(-flat, rest - 1)[:rest]] = True
    return use


def _budget_matrix(A: np.ndarray, sel: np.ndarray, k: int) -> np.ndarray:
    w = np.zeros(A.shape, dtype=np.uint8)
    w[sel] = _budget_use(A[sel], k)
    return w


def best_assignment_for_selection(
    problem: AssignmentProblem, selected, rules: Rules | None = None
) -> np.ndarray | None:
    """A valid (F, C) uint8 assignment using only ``selected``, as good as the heuristic gets.

    Per-class-exact rules: every class takes its top k (optimal without uniqueness), then
    duplicate columns are repaired. Budget rules without uniqueness: the optimal greedy
    allocation (each class's best feature, then the largest remaining values). Forced pairs:
    the pair search, or None when it finds no assignment.
    """
    rules = rules or problem.rules
    sel = np.unique(np.asarray(selected, dtype=np.int64))
    k = problem.per_class
    if rules.forced_pairs:
        return pair_assignment(problem.A, sel, k, problem.forced_pairs())
    if not rules.per_class_exact and not rules.unique_columns:
        return _budget_matrix(problem.A, sel, k)
    if rules.unique_columns:
        return unique_columns(problem.A, sel, k)
    return _top_k_matrix(problem.A, sel, k)


def _finish(problem: AssignmentProblem, sel: np.ndarray, rules: Rules
            ) -> tuple[np.ndarray | None, float]:
    w = best_assignment_for_selection(problem, sel, rules)
    if w is None:
        return None, -np.inf
    mask = np.zeros(problem.n_total, dtype=bool)
    mask[sel] = True
    return w, problem.objective(mask, w)


class _Exact:
    """Swap search on the true value of a selection under the preset's rules.

    The surrogate ignores uniqueness and the budget form, so its local optimum can be beaten
    after the final assignment is built. Here the most promising swaps by surrogate gain
    (``shortlist`` of them) are scored with the real assignment, and the best improving one
    is applied, until none of them improves.
    """

    def __init__(self, problem: AssignmentProblem, search: _Search, rules: Rules,
                 shortlist: int = 48) -> None:
        self.problem, self.search, self.rules, self.shortlist = problem, search, rules, shortlist

    def value(self, sel: np.ndarray) -> float:
        s = self.search
        AS = s.A[sel]
        if self.rules.forced_pairs:  # the greedy repair for the unpaired classes, as below
            w = pair_assignment(self.problem.A, sel, s.k, self.problem.forced_pairs(),
                                fast=True)
            if w is None:
                return -np.inf
            use = w[sel].astype(bool)
        elif not self.rules.per_class_exact and not self.rules.unique_columns:
            use = _budget_use(AS, s.k)  # no (F, C) matrix: this runs for every candidate
        elif self.rules.unique_columns:
            # Scoring trials: the fast greedy repair (a valid value, at most the exact one);
            # the selection finally returned gets the exact repair.
            use = greedy_unique_columns(self.problem.A, sel, s.k)[sel].astype(bool)
        else:
            use = best_assignment_for_selection(self.problem, sel, self.rules)[sel].astype(bool)
        v = s.scale * float(AS[use].sum()) + float(s.b[sel].sum())
        if s.W is not None:
            v -= 0.5 * float(s.W[np.ix_(sel, sel)].sum())
        return v

    def local_search(self, sel: np.ndarray, deadline: float | None = None) -> np.ndarray:
        s = self.search
        sel = sel.copy()
        value = self.value(sel)
        if self.rules.per_class_exact and value >= s.value(sel) - 1e-12 * max(abs(value), 1.0):
            # The true value never exceeds the surrogate here, and this selection is a
            # surrogate local optimum whose assignment loses nothing: no swap can improve.
            return sel
        while deadline is None or time.perf_counter() < deadline:
            pen = s.W[:, sel].sum(axis=1) if s.W is not None else None
            gain = s.swap_gains(sel, pen)
            flat = gain.ravel()
            m = min(self.shortlist, int(np.isfinite(flat).sum()))
            if m == 0:
                break
            cand = np.argpartition(-flat, m - 1)[:m]
            best_gain, best_trial = _IMPROVE * max(abs(value), 1.0), None
            for idx in cand[np.argsort(-flat[cand])]:
                a, j = np.unravel_index(int(idx), gain.shape)
                trial = sel.copy()
                trial[a] = j
                v = self.value(trial)
                if v - value > best_gain:
                    best_gain, best_trial = v - value, trial
            if best_trial is None:
                break
            sel, value = best_trial, value + best_gain
        return sel


class SwapSearch:
    """The improvement step of the heuristic, public for the cut formulation's roundings:
    swap search on the surrogate value, then on the true value under the preset's rules."""

    def __init__(self, problem: AssignmentProblem) -> None:
        self.search = _Search(problem)
        self.exact = _Exact(problem, self.search, problem.rules)

    def greedy(self) -> np.ndarray:
        return self.search.greedy()

    def improve(self, sel: np.ndarray, deadline: float | None = None) -> np.ndarray:
        """A selection no shortlisted single swap improves (or the best by ``deadline``)."""
        return self.exact.local_search(self.search.local_search(sel, deadline), deadline)


def heuristic_solution(
    problem: AssignmentProblem,
    restarts: int = 1,
    seed: int = 0,
    time_limit: float | None = None,
    patience: int | None = None,
    initial: np.ndarray | None = None,
    swaps: SwapSearch | None = None,
) -> HeuristicSolution:
    """Greedy + swap local search + repair; ``restarts`` > 1 perturbs the best and retries.

    ``initial`` (n feature indices) replaces the greedy selection as the first one, so a
    caller can continue from a known good selection; ``swaps`` reuses a :class:`SwapSearch`
    of the same problem (its penalty matrix is the costly part to build).

    Each restart swaps out a random ~20% of the best selection for random good unselected
    features (drawn with weight on their greedy score) and runs the local search again; the
    best valid assignment is kept. ``time_limit`` (seconds) stops the restarts early, and so
    does ``patience``: that many restarts in a row without improvement.
    """
    start = time.perf_counter()
    deadline = None if time_limit is None else start + float(time_limit)
    rules = problem.rules
    swaps = swaps or SwapSearch(problem)
    rng = np.random.default_rng(seed)

    def improve(trial: np.ndarray) -> np.ndarray:
        return swaps.improve(trial, deadline)

    first = swaps.greedy() if initial is None else np.asarray(initial, dtype=np.int64).copy()
    sel = improve(first)
    best_w, best_obj = _finish(problem, sel, rules)
    best_sel = sel
    F, n = problem.n_total, problem.n_features
    # Candidates for perturbation: features that could matter to some class.
    score = problem.scale * np.sort(problem.A, axis=1)[:, -1] + problem.bias
    done = since_best = 1
    for _ in range(max(int(restarts), 1) - 1):
        if deadline is not None and time.perf_counter() >= deadline:
            break
        if patience is not None and since_best > patience:
            break
        if n == F:
            break
        n_out = max(2, int(round(0.2 * n)))
        out = rng.choice(n, size=min(n_out, n), replace=False)
        pool = np.setdiff1d(np.arange(F), best_sel)
        weights = np.exp((score[pool] - score[pool].max()) / max(score[pool].std(), 1e-12))
        incoming = rng.choice(pool, size=min(out.size, pool.size), replace=False,
                              p=weights / weights.sum())
        trial = best_sel.copy()
        trial[out[: incoming.size]] = incoming
        trial = improve(trial)
        w, obj = _finish(problem, trial, rules)
        done += 1
        since_best += 1
        if (best_w is None and w is not None) or obj > best_obj + 1e-12 * max(abs(best_obj), 1.0):
            best_sel, best_w, best_obj = trial, w, obj
            since_best = 1
    return HeuristicSolution(
        selected=np.sort(best_sel),
        matrix=best_w,
        objective=float(best_obj),
        restarts=done,
        seconds=time.perf_counter() - start,
    )
