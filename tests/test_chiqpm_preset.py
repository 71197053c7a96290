"""The chiqpm preset: the forced class pairs, every solver against brute force, the verifier's
new rule, the heuristic's starts, the result file and the requests that cannot be met."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from bruteforce import brute_force
from bruteforce import closest_pairs as plain_closest_pairs

from qpm.assignment.backends import get_backend
from qpm.assignment.forced_pairs import class_distances, closest_pairs, pair_count
from qpm.assignment.heuristic import heuristic_solution
from qpm.assignment.pair_search import embeddable, pair_assignment, shared_counts
from qpm.assignment.problem import AssignmentProblem
from qpm.assignment.result import AssignmentResult
from qpm.assignment.solving import resolve_formulation, solve
from qpm.assignment.synthetic import make_instance
from qpm.assignment.verifier import verify
from qpm.errors import QPMError

EXACT = ["highs", "scip", "gurobi"]


def tiny(seed: int, rho: float = 0.5, **kw) -> AssignmentProblem:
    """F=7, C=4, n=5, k=3 with near-identical class columns (so uniqueness binds too)."""
    rng = np.random.default_rng(seed)
    F, C = 7, 4
    A = rng.random((F, 1)) + 0.15 * rng.random((F, C))
    R = np.triu(rng.random((F, F)), 1)
    b = 0.3 * rng.random(F)
    return AssignmentProblem(A=A, R=R, b=b, n_features=5, per_class=3, preset="chiqpm",
                             rho=rho, **kw)


def _usable(name: str) -> None:
    ok, why = get_backend(name).available()
    if not ok:
        pytest.skip(f"{name} not usable here: {why}")


# --- the pairs -------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_pairs_are_the_closest_columns_of_A(seed):
    A = np.random.default_rng(seed).random((30, 12))
    for rho in (0.25, 0.5, 1.0):
        pairs = closest_pairs(A, rho)
        assert len(pairs) == int(12 * rho)
        assert {tuple(p) for p in pairs.tolist()} == plain_closest_pairs(A, rho)
        assert np.all(pairs[:, 0] < pairs[:, 1])
    D = class_distances(A)
    assert D.max() == pytest.approx(1.0) and np.allclose(D, D.T)
    order = [D[a, b] for a, b in closest_pairs(A, 1.0).tolist()]
    assert order == sorted(order)  # closest first


def test_pair_count_truncates_the_float_product_as_the_reference():
    assert pair_count(100, 0.29) == 28  # 100 * 0.29 = 28.999999999999996
    assert pair_count(10, 0.5) == 5 and pair_count(7, 0.5) == 3 and pair_count(5, 0.0) == 0


def test_exact_ties_go_to_the_reference_scan_order():
    # Classes 0, 1, 2 at the same spot: pairs (1,0), (2,0), (2,1) tie at distance 0; the
    # reference's row-major scan of its lower triangle meets them in that order.
    A = np.array([[1.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    assert closest_pairs(A, 0.5).tolist() == [[0, 1], [0, 2]]
    assert closest_pairs(A, 0.75).tolist() == [[0, 1], [0, 2], [1, 2]]


# --- solvers against brute force --------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("solver", EXACT)
def test_exact_backends_match_brute_force(solver, seed):
    _usable(solver)
    problem = tiny(seed)
    best, _, w = brute_force(problem)
    assert {tuple(p) for p in problem.forced_pairs().tolist()} == plain_closest_pairs(
        problem.A, 0.5)
    result = solve(problem, solver=solver, mip_gap=0.0, strict_solver=True)
    assert result.verified and result.status == "optimal"
    assert result.objective == pytest.approx(best, abs=1e-6)
    assert result.bound == pytest.approx(best, abs=1e-5)
    assert result.rho == 0.5 and result.forced_pairs == problem.forced_pairs().tolist()
    assert np.all(shared_counts(result.matrix, problem.forced_pairs()) == 2)
    # without the pairs the optimum can only be as good or better
    free = solve(AssignmentProblem(problem.A, problem.R, problem.b, 5, 3), solver=solver,
                 mip_gap=0.0, strict_solver=True)
    assert free.objective >= best - 1e-6


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_greedy_gives_a_verified_assignment_no_better_than_the_optimum(seed):
    problem = tiny(seed)
    best, _, _ = brute_force(problem)
    result = solve(problem, solver="greedy")
    assert result.verified and result.objective <= best + 1e-9
    assert np.all(shared_counts(result.matrix, problem.forced_pairs()) == 2)


def test_exact_solve_works_without_a_warm_start():
    problem = tiny(0)
    best, _, _ = brute_force(problem)
    result = solve(problem, solver="highs", mip_gap=0.0, warm_start=False)
    assert result.verified and result.objective == pytest.approx(best, abs=1e-6)


def test_auto_uses_the_full_model_and_says_why(caplog):
    problem = tiny(0)
    assert resolve_formulation("auto", problem, "highs") == "full"
    with caplog.at_level(logging.INFO, logger="qpm.solve"):
        solve(problem, solver="highs")
    assert caplog.text.count("does not model forced class pairs; formulation auto uses") == 1
    with pytest.raises(QPMError, match="does not model forced class pairs"):
        resolve_formulation("cuts", problem, "highs")


# --- the heuristic ---------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["default", "groups", "sparse", "lowrank", "heavytail"])
def test_heuristic_starts_obey_every_forced_pair(family):
    problem = make_instance("tiny", 0, family, preset="chiqpm", rho=1.0)
    h = heuristic_solution(problem, restarts=2, seed=0)
    check = verify(problem, h.selected, h.matrix, h.objective)
    assert check.ok, check.violations
    k = problem.per_class
    assert np.all(shared_counts(h.matrix, problem.forced_pairs()) == k - 1)


def test_pair_assignment_fits_dense_clusters_and_trees():
    rng = np.random.default_rng(0)
    A = rng.random((20, 12))
    star = np.array([[0, c] for c in range(1, 9)])  # a hub with 8 partners
    path = np.array([[c, c + 1] for c in range(11)])  # a long path
    clique = np.array([[a, b] for a in range(5) for b in range(a + 1, 5)])
    for pairs in (star, path, clique):
        w = pair_assignment(A, np.arange(8), 3, pairs)
        assert w is not None and np.all(shared_counts(w, pairs) == 2)
        assert np.all(w.sum(axis=0) == 3) and len({tuple(c) for c in w.T.tolist()}) == 12


# --- the verifier ----------------------------------------------------------------------------


def test_verifier_checks_the_forced_pairs_and_recomputes_the_objective():
    problem = tiny(0)
    best, sel, w = brute_force(problem)
    assert verify(problem, sel, w, best).ok
    a, b = problem.forced_pairs()[0].tolist()
    bad = w.copy()
    bad[:, b] = 0  # give b a set that shares fewer than k-1 features with a
    others = [f for f in sel.tolist() if not w[f, a]]
    keep = [f for f in sel.tolist() if w[f, a]][:1]
    bad[others + keep, b] = 1
    check = verify(problem, sel, bad)
    assert not check.ok
    assert any("do not share exactly k-1" in v for v in check.violations)
    # a problem whose pairs are not the closest ones is caught too
    object.__setattr__(problem, "_forced", np.array([[0, 1], [2, 3]]))
    if {(0, 1), (2, 3)} != plain_closest_pairs(problem.A, 0.5):
        assert any("not the closest" in v for v in verify(problem, sel, w).violations)


def test_result_file_keeps_rho_and_the_pairs(tmp_path):
    problem = tiny(1)
    result = solve(problem, solver="greedy")
    path = tmp_path / "r.json"
    result.save_json(path)
    back = AssignmentResult.load_json(path)
    assert back.rho == 0.5 and back.forced_pairs == problem.forced_pairs().tolist()
    assert verify(problem, back.selected_features, back.matrix, back.objective).ok
    d = result.to_dict()
    d["forced_pairs"] = [[0, 99]]
    with pytest.raises(QPMError, match="forced_pairs name a class outside"):
        AssignmentResult.from_dict(d)
    d["forced_pairs"] = "0-1"
    with pytest.raises(QPMError, match="forced_pairs must be a list"):
        AssignmentResult.from_dict(d)


# --- requests that cannot be met ---------------------------------------------------------------


def test_k_1_and_rho_out_of_range_are_one_line():
    with pytest.raises(QPMError, match="with k = 1 that says nothing"):
        AssignmentProblem(np.random.default_rng(0).random((6, 4)), n_features=4, per_class=1,
                          preset="chiqpm")
    for rho in (-0.1, 1.5, float("nan")):
        with pytest.raises(QPMError, match=r"rho must be a number in \[0, 1\]"):
            tiny(0, rho=rho)
    with pytest.raises(QPMError, match="only 1"):  # 2 classes have one pair, not two
        AssignmentProblem(np.eye(3)[:, :2], n_features=3, per_class=2, preset="chiqpm", rho=1)
    AssignmentProblem(np.random.default_rng(0).random((6, 4)), n_features=4, per_class=1,
                      preset="chiqpm", rho=0.0)  # no pairs: k = 1 is fine


def test_a_class_in_more_pairs_than_its_set_has_neighbours_is_refused():
    # Class 0 is close to the five others, which are far apart: its 5 pairs come first, but
    # a 2-set of 4 features has only 2 * (4 - 2) = 4 sets sharing one feature with it.
    e = np.eye(6)
    A = np.concatenate([np.zeros((6, 1)), e[:, :5]], axis=1) * 0.1  # others 0.14 apart
    with pytest.raises(QPMError, match=r"Class 0 is in 5 forced pairs.*only k\*\(n-k\) = 4"):
        AssignmentProblem(A, n_features=4, per_class=2, preset="chiqpm", rho=1.0)


def test_pairs_no_assignment_can_meet_are_found_before_any_solve():
    # Four close classes (all six pairs forced) and two far ones, with n=4, k=2: four 2-sets
    # of 4 features cannot pairwise share one feature (the largest such family has 3).
    rng = np.random.default_rng(0)
    centre = rng.random(8)
    cols = [centre + 0.01 * rng.random(8) for _ in range(4)]
    cols += [rng.random(8) + 5, rng.random(8) - 5]
    A = np.stack(cols, axis=1)
    assert {tuple(p) for p in closest_pairs(A, 1.0).tolist()} == {
        (a, b) for a in range(4) for b in range(a + 1, 4)}
    assert embeddable(closest_pairs(A, 1.0), 6, 4, 2) is False
    with pytest.raises(QPMError, match="cannot all share k-1 = 1 features"):
        AssignmentProblem(A, n_features=4, per_class=2, preset="chiqpm", rho=1.0)
    # with one feature more the four fit around a shared core
    assert embeddable(closest_pairs(A, 1.0), 6, 5, 2) is True


# --- the command line ------------------------------------------------------------------------


def _sims(tmp_path, **settings):
    from qpm.assignment.cache import save_similarities

    p = tiny(0)
    return save_similarities(tmp_path / "SIMS.npz", p.A, p.R, p.b, settings=settings)


def test_solve_cli_takes_the_preset_and_a_recorded_rho(tmp_path, capsys):
    from qpm.cli import main

    sims = _sims(tmp_path, n_features=5, per_class=3, preset="chiqpm", rho=0.75)
    out = tmp_path / "r.json"
    assert main(["solve", str(sims), "--solver", "highs", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "rho=0.75" in text and "3 class pairs share k-1 features (rho 0.75)" in text
    saved = json.loads(out.read_text())
    problem = tiny(0, rho=0.75)
    assert saved["forced_pairs"] == problem.forced_pairs().tolist()
    assert saved["objective"] == pytest.approx(brute_force(problem)[0], abs=1e-6)


def test_compare_cli_runs_every_solver_on_the_preset(tmp_path, capsys):
    from qpm.cli import main

    sims = _sims(tmp_path)
    code = main(["compare", str(sims), "--solvers", "highs,greedy", "--preset", "chiqpm",
                 "--n-features", "5", "--per-class", "3", "--time-limit", "30"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "preset chiqpm (rho 0.5: 2 forced class pairs)" in out
    best = brute_force(tiny(0))[0]
    assert f"{best:.4f}"[:-1] in out  # HiGHS's optimum in the table
