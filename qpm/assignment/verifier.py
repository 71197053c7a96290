"""The independent verifier: checks a claimed solution against the problem's arrays alone.

Nothing here reuses solver or model code: the objective is recomputed from A, R, b, tau and
the 0/1 arrays with plain numpy, and every constraint of the preset's :class:`Rules` is
checked directly, so a wrong model or a solver bug cannot certify itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from qpm.assignment.presets import Rules
from qpm.assignment.problem import AssignmentProblem
from qpm.assignment.result import AssignmentResult
from qpm.errors import QPMError

REL_TOL = 1e-6
ABS_TOL = 1e-6


@dataclass
class Verification:
    """``ok`` is True when no rule is violated; ``objective`` is recomputed from the arrays."""

    ok: bool
    objective: float
    violations: list[str] = field(default_factory=list)


def recompute_objective(
    problem: AssignmentProblem, mask: np.ndarray, w: np.ndarray, rules: Rules
) -> float:
    """The objective of selection mask (F,) and assignment w (F, C), straight from the formula."""
    F, C = problem.A.shape
    k = problem.per_class
    value = 1000.0 / (k * C) * float(np.sum(problem.A * w))
    if problem.b is not None:
        value += float(problem.b[mask].sum())
    if rules.redundancy and problem.R is not None and problem.redundancy_weight > 0:
        sel = np.flatnonzero(mask)
        R = problem.R
        block = R[np.ix_(sel, sel)]
        iu = np.triu_indices(sel.size, k=1)
        # R may be stored as its upper triangle only: read each pair as max(R_ij, R_ji).
        vals = np.maximum(block, block.T)[iu]
        positive = R[R > 0]
        hit = vals[vals >= problem.tau]
        if hit.size and positive.size:
            lo, hi = float(positive.min()), float(positive.max())
            scaled = np.ones_like(hit) * (hit >= lo) if hi == lo else (hit - lo) / (hi - lo)
            value -= problem.redundancy_weight * float(np.clip(scaled, 0.0, None).sum())
    return value


def forced_pair_violations(problem: AssignmentProblem, w: np.ndarray) -> list[str]:
    """The forced pairs are int(rho * C) distinct class pairs no farther apart (Euclidean
    distance of A's columns, recomputed here) than any other pair, and each shares exactly
    k - 1 features in ``w``."""
    F, C = problem.A.shape
    k = problem.per_class
    pairs = np.asarray(problem.forced_pairs(), dtype=np.int64).reshape(-1, 2)
    out: list[str] = []
    expected = int(C * problem.rho)
    if len(pairs) != expected:
        out.append(f"{len(pairs)} forced pairs, expected int(rho * C) = {expected}")
    if len(pairs) == 0:
        return out
    if np.any(pairs < 0) or np.any(pairs >= C) or np.any(pairs[:, 0] == pairs[:, 1]):
        return out + ["a forced pair names a class outside 0..C-1 or a class twice"]
    keys = {(int(min(a, b)), int(max(a, b))) for a, b in pairs.tolist()}
    if len(keys) != len(pairs):
        out.append("the forced pairs repeat a pair")
    dist = np.full((C, C), np.inf)
    for i in range(1, C):
        dist[i, :i] = np.linalg.norm(problem.A[:, :i] - problem.A[:, [i]], axis=0)
    chosen = np.zeros((C, C), dtype=bool)
    for a, b in keys:
        chosen[b, a] = True
    lower = np.tril(np.ones((C, C), dtype=bool), k=-1)
    far = float(dist[chosen].max())
    near = float(dist[lower & ~chosen].min()) if (lower & ~chosen).any() else np.inf
    if far > near + 1e-9 * max(float(dist[lower].max()), 1e-300):
        out.append(f"the forced pairs are not the closest: one is {far:.6g} apart, an "
                   f"unforced pair {near:.6g}")
    shared = (w[:, pairs[:, 0]] * w[:, pairs[:, 1]]).sum(axis=0)
    wrong = np.flatnonzero(shared != k - 1)
    if wrong.size:
        a, b = pairs[wrong[0]].tolist()
        out.append(f"{wrong.size} forced pair(s) do not share exactly k-1 = {k - 1} features, "
                   f"e.g. classes {a} and {b} share {int(shared[wrong[0]])}")
    return out


def _as_mask(problem: AssignmentProblem, selected, violations: list[str]) -> np.ndarray:
    F = problem.n_total
    sel = np.asarray(selected)
    if sel.dtype == bool and sel.shape == (F,):
        return sel.copy()
    sel = sel.reshape(-1)
    if sel.size and not np.issubdtype(sel.dtype, np.integer):
        if not np.all(np.isfinite(sel)) or np.any(sel != np.round(sel)):
            violations.append("selected features are not integer indices")
            return np.zeros(F, dtype=bool)
        sel = sel.astype(np.int64)
    mask = np.zeros(F, dtype=bool)
    out = (sel < 0) | (sel >= F)
    if np.any(out):
        violations.append(f"{int(out.sum())} selected index(es) outside 0..{F - 1}")
        sel = sel[~out]
    if np.unique(sel).size != sel.size:
        violations.append("selected features contain duplicates")
    mask[sel.astype(np.int64)] = True
    return mask


def verify(
    problem: AssignmentProblem,
    selected,
    matrix,
    claimed_objective: float | None = None,
    rules: Rules | None = None,
) -> Verification:
    """Check a selection (feature indices or an (F,) bool mask) and a 0/1 matrix (F, C)."""
    rules = rules or problem.rules
    F, C = problem.A.shape
    n, k = problem.n_features, problem.per_class
    violations: list[str] = []
    w = np.asarray(matrix)
    if w.shape != (F, C):
        violations.append(f"matrix has shape {w.shape}, expected ({F}, {C})")
        return Verification(False, float("nan"), violations)
    w = w.astype(np.float64)
    if not np.all(np.isfinite(w)) or np.any((w != 0) & (w != 1)):
        violations.append("matrix has non-binary values")
        w = (np.nan_to_num(w) > 0.5).astype(np.float64)
    mask = _as_mask(problem, selected, violations)

    if int(mask.sum()) != n:
        violations.append(f"{int(mask.sum())} features selected, expected exactly {n}")
    unselected_use = (w.sum(axis=1) > 0) & ~mask
    if unselected_use.any():
        shown = np.flatnonzero(unselected_use)[:5].tolist()
        violations.append(f"features used but not selected (w_ic > s_i): {shown}")
    per_class = w.sum(axis=0).astype(np.int64)
    if rules.per_class_exact:
        wrong = np.flatnonzero(per_class != k)
        if wrong.size:
            violations.append(
                f"{wrong.size} class(es) do not have exactly {k} features, e.g. class "
                f"{int(wrong[0])} has {int(per_class[wrong[0]])}"
            )
    else:
        if int(per_class.sum()) != C * k:
            violations.append(f"total budget is {int(per_class.sum())}, expected C*k = {C * k}")
        empty = np.flatnonzero(per_class < 1)
        if empty.size:
            violations.append(f"{empty.size} class(es) have no feature, e.g. class {int(empty[0])}")
    if rules.unique_columns:
        columns = np.ascontiguousarray(w.T.astype(np.uint8))
        _, counts = np.unique(columns, axis=0, return_counts=True)
        if np.any(counts > 1):
            violations.append(
                f"{int((counts[counts > 1]).sum())} classes share identical feature sets "
                "(duplicate columns)"
            )

    if rules.forced_pairs:
        violations += forced_pair_violations(problem, w)

    objective = recompute_objective(problem, mask, w, rules)
    if claimed_objective is not None:
        claimed = float(claimed_objective)
        tolerance = REL_TOL * abs(objective) + ABS_TOL
        if not np.isfinite(claimed) or abs(claimed - objective) > tolerance:
            violations.append(
                f"claimed objective {claimed!r} differs from the recomputed {objective!r}"
            )
    return Verification(not violations, objective, violations)


def check_result(problem: AssignmentProblem, result: AssignmentResult) -> AssignmentResult:
    """Verify a solver's result in place; raise QPMError if its claimed solution is invalid.

    Results without a matrix (infeasible, error) are returned unchanged. On success
    ``verified`` is True and ``objective`` becomes the recomputed value.
    """
    if result.matrix is None:
        return result
    check = verify(problem, result.selected_features, result.matrix, result.objective)
    if not check.ok:
        raise QPMError(
            f"The {result.solver} solution fails verification: {'; '.join(check.violations)}.",
            "This is a solver or model bug; try another --solver and report it.",
        )
    result.verified = True
    result.objective = check.objective
    if result.tau is None:
        result.tau = problem.tau
    if result.tau_rule is None and problem.tau is not None:
        result.tau_rule = problem.tau_rule
    return result
