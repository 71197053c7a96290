"""The independent verifier rejects every kind of violated constraint and accepts valid ones."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest

from qpm.assignment.presets import Rules
from qpm.assignment.problem import AssignmentProblem
from qpm.assignment.result import AssignmentResult
from qpm.assignment.verifier import check_result, verify
from qpm.errors import QPMError

F, C, N, K = 6, 3, 4, 2


def _problem(preset="qpm", **kw) -> AssignmentProblem:
    rng = np.random.default_rng(5)
    A = rng.uniform(-0.3, 1.0, size=(F, C))
    R = np.triu(rng.uniform(0, 1, size=(F, F)), k=1)
    b = rng.uniform(0, 0.316, size=F)
    kw.setdefault("tau", 0.3)
    return AssignmentProblem(A, R, b, n_features=N, per_class=K, preset=preset, **kw)


def _matrix(columns) -> np.ndarray:
    w = np.zeros((F, C), dtype=np.uint8)
    for c, feats in enumerate(columns):
        w[list(feats), c] = 1
    return w


VALID_SEL = [0, 1, 2, 3]
VALID_W = _matrix([{0, 1}, {1, 2}, {2, 3}])


def _formula(p: AssignmentProblem, sel, w, penalty=True) -> float:
    positive = p.R[p.R > 0]
    lo, hi = positive.min(), positive.max()
    pen = sum((p.R[i, j] - lo) / (hi - lo) for i, j in combinations(sorted(sel), 2)
              if p.R[i, j] >= p.tau) if penalty else 0.0
    return 1000 / (K * C) * float((p.A * w).sum()) + float(p.b[sel].sum()) - pen


def test_accepts_a_valid_solution_and_recomputes_the_objective():
    p = _problem()
    expected = _formula(p, VALID_SEL, VALID_W)
    check = verify(p, VALID_SEL, VALID_W, claimed_objective=expected)
    assert check.ok and check.violations == []
    assert check.objective == pytest.approx(expected)
    mask = np.isin(np.arange(F), VALID_SEL)
    assert check.objective == pytest.approx(p.objective(mask, VALID_W))
    assert verify(p, mask, VALID_W).ok  # a boolean mask works as the selection too


def test_redundancy_off_for_the_no_redundancy_preset():
    p = _problem("no-redundancy")
    check = verify(p, VALID_SEL, VALID_W)
    assert check.ok and check.objective == pytest.approx(_formula(p, VALID_SEL, VALID_W, False))
    assert check.objective > _formula(p, VALID_SEL, VALID_W)  # the penalty was positive here


def _violations(p, sel, w, claimed=None, rules=None) -> list[str]:
    check = verify(p, sel, w, claimed, rules)
    assert not check.ok
    return check.violations


def test_wrong_number_selected():
    v = _violations(_problem(), [0, 1, 2, 3, 4], VALID_W)
    assert v == ["5 features selected, expected exactly 4"]


def test_feature_used_but_not_selected():
    (v,) = _violations(_problem(), [0, 1, 2, 5], VALID_W)
    assert "used but not selected" in v and "[3]" in v


def test_class_without_exactly_k():
    (v,) = _violations(_problem(), VALID_SEL, _matrix([{0, 1}, {1, 2}, {0, 2, 3}]))
    assert "do not have exactly 2" in v and "class 2 has 3" in v


def test_duplicate_columns():
    (v,) = _violations(_problem(), VALID_SEL, _matrix([{0, 1}, {0, 1}, {2, 3}]))
    assert "identical feature sets" in v
    # The same matrix is fine when the rules do not ask for uniqueness.
    rules = Rules(unique_columns=False)
    assert verify(_problem(), VALID_SEL, _matrix([{0, 1}, {0, 1}, {2, 3}]), rules=rules).ok


def test_unbalanced_budget_and_empty_classes():
    p = _problem("unbalanced")
    assert verify(p, VALID_SEL, _matrix([{0, 1, 2}, {1}, {0, 3}])).ok  # uneven, total 6
    assert verify(p, VALID_SEL, _matrix([{0, 1}, {0, 1}, {2, 3}])).ok  # duplicates allowed
    (v,) = _violations(p, VALID_SEL, _matrix([{0, 1, 2}, {1}, {3}]))
    assert "total budget is 5, expected C*k = 6" in v
    (v,) = _violations(p, VALID_SEL, _matrix([{0, 1, 2, 3}, set(), {0, 3}]))
    assert "have no feature" in v


def test_wrong_claimed_objective():
    p = _problem()
    true = _formula(p, VALID_SEL, VALID_W)
    assert verify(p, VALID_SEL, VALID_W, true * (1 + 1e-8)).ok  # within tolerance
    (v,) = _violations(p, VALID_SEL, VALID_W, true + 1e-3)
    assert "claimed objective" in v
    assert _violations(p, VALID_SEL, VALID_W, float("nan"))


def test_non_binary_values_and_wrong_shape():
    p = _problem()
    w = VALID_W.astype(float)
    w[0, 0] = 0.5
    assert "non-binary" in _violations(p, VALID_SEL, w)[0]
    w = VALID_W.astype(int)
    w[0, 0] = 2
    assert "non-binary" in _violations(p, VALID_SEL, w)[0]
    assert "shape" in _violations(p, VALID_SEL, VALID_W[:, :2])[0]


def test_bad_selection_indices():
    p = _problem()
    assert any("outside" in v for v in _violations(p, [0, 1, 2, 9], VALID_W))
    assert any("duplicates" in v for v in _violations(p, [0, 1, 2, 2, 3], VALID_W))


def test_check_result_marks_verified_and_replaces_objective():
    p = _problem()
    true = _formula(p, VALID_SEL, VALID_W)
    r = AssignmentResult("optimal", "test", objective=true + 1e-9, selected_features=VALID_SEL,
                         matrix=VALID_W)
    out = check_result(p, r)
    assert out is r and r.verified and r.objective == pytest.approx(true) and r.tau == p.tau


def test_check_result_raises_naming_the_violations():
    p = _problem()
    r = AssignmentResult("optimal", "buggy", objective=1.0, selected_features=VALID_SEL,
                         matrix=_matrix([{0, 1}, {0, 1}, {2, 3}]))
    with pytest.raises(QPMError, match="buggy solution fails verification.*identical.*claimed"):
        check_result(p, r)
    assert not r.verified


def test_check_result_passes_results_without_a_solution():
    r = AssignmentResult("infeasible", "x")
    assert check_result(_problem(), r) is r and not r.verified
