"""The cut formulation: its cuts are valid and tight, and it finds the exact optimum.

Ground truth is the brute force of tests/bruteforce.py (every selection enumerated, the
unique assignment solved as a linear assignment problem) and the straightforward model.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest
from bruteforce import brute_force

from qpm.assignment.backends import get_backend
from qpm.assignment.formulations import SolveOptions
from qpm.assignment.formulations.cuts.loop import CutSolver
from qpm.assignment.formulations.cuts.loop import solve as solve_cuts
from qpm.assignment.formulations.cuts.penalty import separate_cliques
from qpm.assignment.formulations.cuts.separation import TopK
from qpm.assignment.problem import AssignmentProblem
from qpm.assignment.verifier import verify
from qpm.errors import QPMError


def _instance(seed: int, F: int = 8, C: int = 4, n: int = 4, k: int = 2, kind: str = "plain",
              preset: str = "qpm") -> AssignmentProblem:
    rng = np.random.default_rng(seed)
    A = rng.random((F, C))
    if kind == "ties":
        A = np.round(A * 3) / 3  # many equal values: decoding must not depend on luck
    if kind == "collide":
        # Three classes that all want the same top-k set: uniqueness must bite.
        A[:, 1] = A[:, 0]
        A[:, 2] = A[:, 0] + 0.01 * rng.random(F)
    R = rng.random((F, F))
    R = (R + R.T) / 2
    np.fill_diagonal(R, 0)
    tau = float(np.quantile(R[R > 0], 0.6))
    return AssignmentProblem(A=A, R=R, b=0.3 * rng.random(F), n_features=n, per_class=k,
                             tau=tau, preset=preset)


# -- separation ---------------------------------------------------------------------------
def test_topk_values_and_cuts_are_exact_at_integer_points():
    rng = np.random.default_rng(0)
    A = np.round(rng.random((9, 5)) * 4) / 4  # ties on purpose
    k = 3
    tk = TopK(A, k)
    for sel in combinations(range(9), 5):
        mask = np.zeros(9, dtype=bool)
        mask[list(sel)] = True
        want = np.sort(A[mask], axis=0)[::-1][:k].sum(axis=0)
        np.testing.assert_allclose(tk.values(mask), want)
        W = tk.decode(mask)
        assert (W.sum(axis=0) == k).all() and not np.any(W[~mask])
        np.testing.assert_allclose((A * W).sum(axis=0), want)
        # The cut built at this selection is tight here ...
        _, lam = tk.fill(mask.astype(float))
        cb = tk.cuts(np.arange(5), lam)
        rhs = cb.rhs.copy()
        np.add.at(rhs, cb.rows, cb.vals * mask[cb.cols])
        np.testing.assert_allclose(rhs, want)
    # ... and every cut is valid (>= the top-k value) at every selection.
    cb = tk.rank_cuts(np.arange(1, 10))
    for sel in combinations(range(9), 4):
        mask = np.zeros(9, dtype=bool)
        mask[list(sel)] = True
        rhs = cb.rhs.copy()
        np.add.at(rhs, cb.rows, cb.vals * mask[cb.cols])
        assert np.all(rhs >= tk.values(mask)[cb.cls] - 1e-12)


def test_fill_is_the_lp_value_at_fractional_points():
    from scipy.optimize import linprog

    rng = np.random.default_rng(1)
    A = rng.normal(size=(12, 4))
    k = 3
    tk = TopK(A, k)
    for _ in range(5):
        s = rng.random(12)
        s *= 6 / s.sum()
        s = np.clip(s, 0, 1)
        value, _ = tk.fill(s)
        for c in range(4):
            lp = linprog(-A[:, c], A_eq=np.ones((1, 12)), b_eq=[k],
                         bounds=list(zip(np.zeros(12), s, strict=True)))
            assert value[c] == pytest.approx(-lp.fun, abs=1e-9)


# -- every row of the relaxation is valid for every feasible point --------------------------
def test_all_rows_hold_at_every_integer_selection():
    problem = _instance(3, F=9, n=4, kind="plain")
    cs = CutSolver(problem, SolveOptions(threads=1, mip_gap=1e-9), get_backend("highs"))
    cs.build()
    used = cs.root(None)
    from qpm.assignment.formulations.cuts.relaxation import Relaxation  # noqa: F401 - documents the type

    cs.pairs.close(np.flatnonzero(used[:5]))  # force star rows for most pairs
    cs.explicit_class(1)
    form = cs.rel.form(integral=True)
    for sel in combinations(range(9), 4):
        mask = np.zeros(9, dtype=bool)
        mask[list(sel)] = True
        cs.best.mask, cs.best.W = mask, cs.tk.decode(mask)
        x = cs.start_vector()
        ax = form.A @ x
        assert np.all(ax <= form.row_hi + 1e-9) and np.all(ax >= form.row_lo - 1e-9)
        # the relaxation prices the point exactly: objective = true value without uniqueness
        assert form.c @ x == pytest.approx(problem.objective(mask, cs.best.W))


def test_clique_rows_are_valid():
    problem = _instance(5, F=10, n=5)
    cs = CutSolver(problem, SolveOptions(threads=1, mip_gap=1e-9), get_backend("highs"))
    cs.build()
    F = 10
    x = np.zeros(cs.rel.n_cols)
    x[:F] = 0.5  # a spread point the McCormick rows allow at zero penalty
    added = separate_cliques(cs.pairs, np.concatenate([x, np.zeros(0)]), limit=50)
    assert added > 0
    form = cs.rel.form(integral=True)
    for sel in combinations(range(F), 5):
        mask = np.zeros(F, dtype=bool)
        mask[list(sel)] = True
        cs.best.mask, cs.best.W = mask, cs.tk.decode(mask)
        xs = cs.start_vector()
        assert np.all(form.A @ xs <= form.row_hi + 1e-9)


# -- exact optimum -------------------------------------------------------------------------
CASES = [(0, "plain"), (1, "collide"), (2, "ties"), (5, "collide"), (9, "collide"),
         (12, "ties"), (28, "collide"), (36, "collide")]


@pytest.mark.parametrize("seed,kind", CASES)
def test_matches_brute_force_highs(seed, kind):
    problem = _instance(seed, kind=kind)
    value, _, _ = brute_force(problem)
    res = solve_cuts(problem, get_backend("highs"), SolveOptions(threads=1, mip_gap=1e-9))
    check = verify(problem, res.selected_features, res.matrix, res.objective)
    assert check.ok, check.violations
    assert res.status == "optimal"
    assert res.objective == pytest.approx(value, abs=1e-6)
    assert res.bound >= value - 1e-6


@pytest.mark.parametrize("seed,kind", [(1, "collide"), (2, "ties")])
def test_matches_brute_force_scip(seed, kind):
    problem = _instance(seed, kind=kind)
    value, _, _ = brute_force(problem)
    res = solve_cuts(problem, get_backend("scip"), SolveOptions(threads=1, mip_gap=1e-9))
    assert verify(problem, res.selected_features, res.matrix).ok
    assert res.objective == pytest.approx(value, abs=1e-6)


def test_collisions_need_explicit_uniqueness():
    problem = _instance(1, kind="collide")
    res = solve_cuts(problem, get_backend("highs"), SolveOptions(threads=1, mip_gap=1e-9))
    cols = {tuple(np.flatnonzero(res.matrix[:, c])) for c in range(problem.n_classes)}
    assert len(cols) == problem.n_classes
    assert "explicit uniqueness" in res.message


def test_no_redundancy_preset_and_budget_preset():
    problem = _instance(4, preset="no-redundancy")
    value, _, _ = brute_force(problem)
    res = solve_cuts(problem, get_backend("highs"), SolveOptions(threads=1, mip_gap=1e-9))
    assert res.objective == pytest.approx(value, abs=1e-6)
    with pytest.raises(QPMError):
        solve_cuts(_instance(4, preset="unbalanced"), get_backend("highs"), SolveOptions())


def test_same_optimum_as_the_full_model_on_tiny():
    from qpm.assignment.solving import solve
    from qpm.assignment.synthetic import make_instance

    problem = make_instance("tiny", seed=1)
    full = solve(problem, "highs", threads=1, formulation="full")
    cuts = solve(problem, "highs", threads=1, formulation="cuts")
    assert full.status == cuts.status == "optimal"
    assert cuts.verified
    assert cuts.objective == pytest.approx(full.objective, rel=2e-4)


def test_qpm_full_preset_keeps_the_straightforward_model():
    from qpm.assignment.solving import resolve_formulation
    from qpm.assignment.synthetic import make_instance

    assert resolve_formulation("auto", make_instance("tiny", seed=0)) == "cuts"
    problem = make_instance("tiny", seed=0, preset="qpm-full")
    assert resolve_formulation("auto", problem) == "full"
    with pytest.raises(QPMError):
        resolve_formulation("cuts", problem)


# -- one Pyomo model, compiled incrementally, on the chosen backend ------------------------
def _dense(form):
    return np.column_stack([form.A.toarray(), form.row_lo, form.row_hi])


def test_the_cut_model_is_one_pyomo_model_compiled_incrementally():
    import pyomo.environ as pyo

    from qpm.assignment.formulations.compile import compile_model

    problem = _instance(1, kind="collide")
    cs = CutSolver(problem, SolveOptions(threads=1, mip_gap=1e-9), get_backend("highs"))
    cs.build()
    used = cs.root(None)  # rows and columns arrive in many rounds
    cs.pairs.close(np.flatnonzero(used[:5]))
    cs.explicit_class(0)
    grown = cs.rel.form(integral=True)
    assert isinstance(cs.rel.model, pyo.ConcreteModel)
    fresh = compile_model(cs.rel.model)  # the same Pyomo model compiled from scratch
    assert [v.name for v in fresh.columns] == [v.name for v in grown.columns]
    np.testing.assert_array_equal(fresh.c, grown.c)  # objective terms of late columns too
    np.testing.assert_array_equal(fresh.integer, grown.integer)
    np.testing.assert_array_equal(fresh.col_hi, grown.col_hi)
    np.testing.assert_allclose(_dense(fresh), _dense(grown))
    # Leaving rows out of the MIP deactivates them in the Pyomo model itself.
    keep = np.ones(grown.n_rows, dtype=bool)
    keep[problem.n_total:][::3] = False  # never the budget row
    cut = cs.rel.form(integral=False, keep=keep)
    assert not cut.integer.any() and cut.n_rows == keep.sum()
    np.testing.assert_allclose(_dense(compile_model(cs.rel.model)), _dense(cut))


@pytest.mark.parametrize("solver", ["highs", "scip", "gurobi"])
def test_root_lp_and_mip_run_on_the_chosen_backend(solver):
    backend = get_backend(solver)
    ok, why = backend.available()
    if not ok:
        pytest.skip(why)
    loads = []
    original = backend.load

    def spy(form):
        loads.append(bool(form.integer.any()))
        return original(form)

    backend.load = spy
    problem = _instance(28, kind="collide")
    value, _, _ = brute_force(problem)
    cs = CutSolver(problem, SolveOptions(threads=1, mip_gap=1e-9), backend)
    cs.build()
    cs.root(None)
    assert loads == [False]  # the root LP went to this backend, integrality relaxed
    assert cs.bound >= value - 1e-7  # and its optimum bounds the true optimum
    res = solve_cuts(problem, backend, SolveOptions(threads=1, mip_gap=1e-9))
    assert res.objective == pytest.approx(value, abs=1e-7)
    assert loads[1] is False and True in loads[2:]  # root LP, then the MIP, same backend


def test_pyomo_writes_the_cut_model_and_a_solver_reading_it_agrees(tmp_path):
    """Row blocks are Pyomo MatrixConstraints: Pyomo's own LP writer writes them."""
    highspy = pytest.importorskip("highspy")
    problem = _instance(2)
    cs = CutSolver(problem, SolveOptions(threads=1), get_backend("highs"))
    cs.build()
    cs.root(None)
    path = tmp_path / "cuts.lp"
    cs.rel.model.write(str(path), io_options={"symbolic_solver_labels": True})
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.readModel(str(path))
    h.run()
    ours = get_backend("highs").load(cs.rel.form(integral=True)).solve(threads=1)
    assert h.getInfo().objective_function_value == pytest.approx(ours.objective, rel=1e-9)


@pytest.mark.parametrize("solver", ["highs", "scip"])
def test_dropping_slack_cuts_from_the_root_lp_session(solver):
    """Rows dropped from an LP session are gone there (its optimum equals a fresh load of the
    rows that stay) and still in the model; the session keeps growing afterwards."""
    backend = get_backend(solver)
    ok, why = backend.available()
    if not ok:
        pytest.skip(why)
    problem = _instance(3)
    cs = CutSolver(problem, SolveOptions(threads=1), backend)
    cs.build()
    lp = backend.load(cs.rel.form(integral=False))
    cursor = cs.rel.cursor()
    x = lp.solve(threads=1).x
    cs.rel.add_cuts(cs.tk.separate(x[: cs.F], x[cs.F: cs.F + cs.C])[0])
    cs.rel.sync(lp, cursor, integral=False)
    x = lp.solve(threads=1).x
    slack = cs.rel.slack_cuts(x, cursor, cursor.rows)
    assert slack.size > 0
    assert cs.rel.drop(lp, cursor, slack) == slack.size
    assert cs.rel.drop(lp, cursor, slack) == 0  # already gone
    cs.rel.add_cuts(cs.tk.rank_cuts(np.array([2])))  # grows again after the drop
    cs.rel.sync(lp, cursor, integral=False)
    kept = cursor.live
    form = cs.rel.compile().form
    fresh = backend.load(cs.rel.form(integral=False, keep=kept)).solve(threads=1)
    assert form.n_rows == kept.size  # the model still holds every row
    assert lp.solve(threads=1).objective == pytest.approx(fresh.objective, rel=1e-7)
