"""The greedy + swap heuristic: always feasible, optimal on tiny instances, unique columns."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest
from bruteforce import best_assignment, brute_force

from qpm.assignment.heuristic import _Search, best_assignment_for_selection, heuristic_solution
from qpm.assignment.presets import preset_names
from qpm.assignment.problem import AssignmentProblem
from qpm.assignment.repair import unique_columns
from qpm.assignment.similarities import compute_similarities
from qpm.assignment.synthetic import make_features, make_instance
from qpm.assignment.verifier import verify

PRESETS = ["qpm", "no-redundancy", "unbalanced"]


def _tiny(seed: int, preset: str, F=8, C=4, n=4, k=2) -> AssignmentProblem:
    X, y = make_features(F, C, samples_per_class=6, seed=seed)
    A, R = compute_similarities(X, y)
    b = np.random.default_rng(seed).uniform(0, 0.316, F)
    return AssignmentProblem(A, R, b, n_features=n, per_class=k, preset=preset)


@pytest.mark.parametrize("preset", preset_names())
def test_valid_for_every_preset(preset):
    p = make_instance("tiny", seed=2, preset=preset)
    h = heuristic_solution(p)
    check = verify(p, h.selected, h.matrix, h.objective)
    assert check.ok, check.violations
    assert h.matrix.dtype == np.uint8 and h.matrix.shape == p.A.shape
    assert h.selected.size == p.n_features and np.all(np.diff(h.selected) > 0)


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("seed", range(4))
def test_matches_the_brute_force_optimum(preset, seed):
    p = _tiny(seed, preset)
    opt, _, w_opt = brute_force(p)
    single = heuristic_solution(p)
    assert verify(p, single.selected, single.matrix, single.objective).ok
    assert single.objective <= opt + 1e-9
    assert single.objective >= opt - 0.15 * abs(opt)  # a single start is close ...
    multi = heuristic_solution(p, restarts=10, seed=seed)
    assert multi.objective == pytest.approx(opt, rel=1e-9)  # ... restarts reach the optimum
    assert multi.objective >= single.objective


@pytest.mark.parametrize("seed", range(3))
def test_optimal_with_uniqueness_binding(seed):
    # C(5, 2) = 10 subsets for 5 classes: uniqueness matters on these.
    p = _tiny(seed + 10, "qpm", F=9, C=5, n=5, k=2)
    opt = brute_force(p)[0]
    h = heuristic_solution(p, restarts=10)
    assert verify(p, h.selected, h.matrix, h.objective).ok
    assert h.objective == pytest.approx(opt, rel=1e-9)


@pytest.mark.parametrize("preset", PRESETS)
def test_assignment_for_a_selection_is_optimal(preset):
    # The per-selection step alone: uniqueness is matched exactly for small C.
    for seed in range(3):
        p = _tiny(seed, preset, F=8, C=5, n=5, k=2)
        for sel in list(combinations(range(8), 5))[::7]:
            expected, _ = best_assignment(p, sel)
            w = best_assignment_for_selection(p, np.array(sel))
            mask = np.isin(np.arange(8), sel)
            assert verify(p, mask, w).ok
            assert float((p.A * w).sum()) == pytest.approx(expected)


def test_swap_gains_equal_recomputed_values():
    p = make_instance("tiny", seed=1)
    search = _Search(p)
    sel = np.random.default_rng(0).choice(p.n_total, p.n_features, replace=False)
    gains = search.swap_gains(sel, search.W[:, sel].sum(axis=1))
    base = search.value(sel)
    for a in range(sel.size):
        for j in range(0, p.n_total, 3):
            if j in sel:
                assert gains[a, j] == -np.inf
                continue
            trial = sel.copy()
            trial[a] = j
            assert gains[a, j] == pytest.approx(search.value(trial) - base, abs=1e-9)


def test_repair_makes_colliding_columns_unique():
    # Every class ranks the features the same way, so all top-k sets are identical.
    rng = np.random.default_rng(0)
    F, C, k = 7, 6, 2
    A = np.linspace(1.0, 0.1, F)[:, None] + 1e-3 * rng.uniform(size=(F, C))
    sel = np.array([0, 1, 2, 3])  # C(4, 2) = 6 = C: every pair must be used exactly once
    w = unique_columns(A, sel, k)
    columns = {tuple(np.flatnonzero(w[:, c])) for c in range(C)}
    assert columns == set(combinations(sel.tolist(), 2))
    assert np.all(w.sum(axis=0) == k) and np.all(w[4:] == 0)
    # Many colliding classes (C = 40 > exact_up_to path off) still end up unique.
    A = np.linspace(1.0, 0.1, 12)[:, None] + 1e-3 * rng.uniform(size=(12, 40))
    w = unique_columns(A, np.arange(8), 3, exact_up_to=10)
    assert np.unique(w.T, axis=0).shape[0] == 40 and np.all(w.sum(axis=0) == 3)


def test_repair_moves_the_class_that_loses_least():
    A = np.array([[1.0, 1.0], [1.0, 1.0], [0.0, 0.9]])  # both classes want {0, 1}
    w = unique_columns(A, np.arange(3), 2)
    assert set(np.flatnonzero(w[:, 0])) == {0, 1}  # moving class 0 would cost 1.0
    assert float(A[:, 1] @ w[:, 1]) == pytest.approx(1.9)  # class 1 moves, losing 0.1


def test_unbalanced_allocates_the_budget_greedily():
    p = _tiny(3, "unbalanced")
    sel = np.array([0, 2, 4, 6])
    w = best_assignment_for_selection(p, sel)
    assert w.sum() == 4 * 2 and np.all(w.sum(axis=0) >= 1) and np.all(w[[1, 3, 5, 7]] == 0)
    expected, _ = best_assignment(p, tuple(sel))
    assert float((p.A * w).sum()) == pytest.approx(expected)


def test_seeded_restarts_and_time_limit():
    p = make_instance("small", seed=0)
    a = heuristic_solution(p, restarts=3, seed=5)
    b = heuristic_solution(p, restarts=3, seed=5)
    assert np.array_equal(a.selected, b.selected) and a.objective == b.objective
    assert a.objective >= heuristic_solution(p).objective
    quick = heuristic_solution(p, restarts=50, time_limit=0.0)
    assert quick.restarts == 1 and verify(p, quick.selected, quick.matrix, quick.objective).ok


def test_greedy_repair_is_valid_and_never_beats_the_exact_one():
    from itertools import combinations

    from qpm.assignment.repair import greedy_unique_columns, unique_columns

    rng = np.random.default_rng(7)
    for _ in range(20):
        A = rng.random((9, 12))
        A[:, 6:] = A[:, :6] + 0.01 * rng.random((9, 6))  # classes that want the same sets
        sel = np.sort(rng.choice(9, size=6, replace=False))  # C(6, 2) = 15 >= 12 sets
        g = greedy_unique_columns(A, sel, 2)
        e = unique_columns(A, sel, 2, exact_up_to=12)
        for W in (g, e):
            assert np.all(W.sum(axis=0) == 2) and not W[np.setdiff1d(np.arange(9), sel)].any()
            cols = {tuple(np.flatnonzero(W[:, c])) for c in range(12)}
            assert len(cols) == 12  # all classes distinct
        assert (A * g).sum() <= (A * e).sum() + 1e-12
        # the exact repair is optimal: brute force over distinct set assignments is too big,
        # but no class can do better than its own best set
        best = sum(max(A[list(s), c].sum() for s in combinations(sel, 2)) for c in range(12))
        assert (A * e).sum() <= best + 1e-12
