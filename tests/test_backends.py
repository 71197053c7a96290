"""Every backend against the brute-force optimum, per preset; sessions grow correctly."""

from __future__ import annotations

import numpy as np
import pyomo.environ as pyo
import pytest
import scipy.sparse as sp
from bruteforce import brute_force

from qpm.assignment import presets as preset_registry
from qpm.assignment.backends import get_backend
from qpm.assignment.backends.base import MatrixForm, installed
from qpm.assignment.formulations.compile import ModelCompiler
from qpm.assignment.formulations.full import build_model
from qpm.assignment.presets import apply_qpm
from qpm.assignment.problem import AssignmentProblem
from qpm.assignment.solving import solve
from qpm.assignment.status import Availability, SolutionStatus, Termination
from qpm.assignment.synthetic import make_instance
from qpm.errors import QPMError

EXACT = ["highs", "scip", "gurobi"]
PRESETS = ["qpm", "qpm-lazy", "unbalanced", "no-redundancy"]


def _usable(name: str) -> None:
    ok, why = get_backend(name).available()
    if not ok:
        pytest.skip(f"{name} not usable here: {why}")


def small_problem(seed: int, preset: str = "qpm", **kw) -> AssignmentProblem:
    """F=8, C=4, n=4, k=2 with near-identical class columns so uniqueness really binds."""
    rng = np.random.default_rng(seed)
    F, C = 8, 4
    A = rng.random((F, 1)) + 0.15 * rng.random((F, C))
    R = np.triu(rng.random((F, F)), 1)
    b = 0.3 * rng.random(F)
    return AssignmentProblem(A=A, R=R, b=b, n_features=4, per_class=2, preset=preset, **kw)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("solver", EXACT)
def test_exact_backends_match_brute_force(solver, preset, seed):
    _usable(solver)
    problem = small_problem(seed, preset)
    best, _, _ = brute_force(problem)
    result = solve(problem, solver=solver, mip_gap=0.0, strict_solver=True, formulation="full")
    assert result.verified
    assert result.status == "optimal"
    assert result.solver == solver and result.fallback is None
    assert result.objective == pytest.approx(best, abs=1e-6)
    assert result.bound == pytest.approx(best, abs=1e-5)


@pytest.mark.parametrize("solver", EXACT)
def test_cut_formulation_through_each_backend_matches_brute_force(solver, preset="qpm"):
    # The cut loop's own tests cover its presets; here: its sessions on every backend.
    _usable(solver)
    for seed in (0, 1):
        problem = small_problem(seed, preset)
        best, _, _ = brute_force(problem)
        # The cut loop certifies its own gap, so it needs a gap a little above zero.
        result = solve(problem, solver=solver, mip_gap=1e-6, strict_solver=True,
                       formulation="cuts")
        assert result.verified and result.status == "optimal"
        assert result.objective == pytest.approx(best, rel=1e-6)


@pytest.mark.parametrize("preset", PRESETS)
def test_scip_file_hand_off_matches_brute_force(preset, monkeypatch):
    # Large models reach SCIP through an MPS file; force that path on small ones.
    from qpm.assignment.backends.scip import ScipSession

    _usable("scip")
    monkeypatch.setattr(ScipSession, "FILE_THRESHOLD", 0)
    for seed in (0, 1):
        problem = small_problem(seed, preset)
        result = solve(problem, solver="scip", mip_gap=0.0, formulation="full")
        assert result.status == "optimal"
        assert result.objective == pytest.approx(brute_force(problem)[0], abs=1e-6)


def test_uniqueness_binds_on_the_test_instances():
    # Without the uniqueness rule the optimum differs, so the tests above check it.
    problem = small_problem(0, "qpm")
    free = preset_registry.register_preset(
        "test-no-unique", rules=preset_registry.Rules(unique_columns=False)
    )
    try:
        unconstrained = AssignmentProblem(
            A=problem.A, R=problem.R, b=problem.b, n_features=4, per_class=2, preset=free.name
        )
        assert brute_force(unconstrained)[0] > brute_force(problem)[0] + 1e-6
    finally:
        preset_registry._PRESETS.pop("test-no-unique")


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("seed", [0])
def test_greedy_is_feasible_and_not_above_the_optimum(preset, seed):
    problem = small_problem(seed, preset)
    best, _, _ = brute_force(problem)
    result = solve(problem, solver="greedy")
    assert result.verified
    assert result.bound is None and result.status == "feasible"  # no proof, no limit hit
    assert result.termination is Termination.HEURISTIC
    assert result.solution is SolutionStatus.FEASIBLE
    assert result.objective <= best + 1e-9


def test_backends_agree_on_tiny():
    problem = make_instance("tiny", seed=0)
    results = {
        name: solve(problem, solver=name, mip_gap=0.0, formulation="full") for name in EXACT
    }
    for r in results.values():
        assert r.verified and r.status == "optimal"
    assert results["scip"].objective == pytest.approx(results["highs"].objective, abs=1e-6)
    g = results["gurobi"]
    if g.fallback is None:
        assert g.solver == "gurobi"
        assert g.objective == pytest.approx(results["highs"].objective, abs=1e-6)
    else:  # licence or installation: HiGHS stood in, and that is on record
        assert g.solver == "highs" and "HiGHS" in g.fallback


def test_user_registered_preset_is_applied():
    problem = small_problem(1, "qpm")
    _, chosen, _ = brute_force(problem)
    banned = int(chosen[0])

    def ban_one(model, prob):
        apply_qpm(model, prob)
        model.ban = pyo.Constraint(expr=model.s[banned] == 0)

    preset_registry.register_preset("test-ban", apply=ban_one)
    try:
        user = AssignmentProblem(
            A=problem.A, R=problem.R, b=problem.b, n_features=4, per_class=2, preset="test-ban"
        )
        # Same problem with the banned feature made worthless: its optimum avoids it.
        b = problem.b.copy()
        b[banned] = -1e4
        expected = brute_force(
            AssignmentProblem(A=problem.A, R=problem.R, b=b, n_features=4, per_class=2)
        )[0]
        for solver in ("highs", "scip"):
            result = solve(user, solver=solver, mip_gap=0.0)  # auto: the full model
            assert result.verified
            assert banned not in result.selected_features
            assert result.objective == pytest.approx(expected, abs=1e-6)
    finally:
        preset_registry._PRESETS.pop("test-ban")


def _toy_form() -> MatrixForm:
    # max x0 + 2 x1, x binary, x0 + x1 <= 2
    return MatrixForm(
        c=np.array([1.0, 2.0]), c0=0.5, maximize=True,
        A=sp.csr_array(np.array([[1.0, 1.0]])),
        row_lo=np.array([-np.inf]), row_hi=np.array([2.0]),
        col_lo=np.zeros(2), col_hi=np.ones(2), integer=np.array([True, True]),
        columns=[None, None], start=np.full(2, np.nan),
    )


@pytest.mark.parametrize("solver", EXACT + ["scip-mps"])
def test_sessions_grow_by_rows_and_columns(solver, monkeypatch):
    if solver == "scip-mps":
        from qpm.assignment.backends.scip import ScipSession

        monkeypatch.setattr(ScipSession, "FILE_THRESHOLD", 0)
        solver = "scip"
    _usable(solver)
    session = get_backend(solver).load(_toy_form())
    assert session.solve(mip_gap=0.0).objective == pytest.approx(3.5)
    session.add_rows(sp.csr_array(np.array([[1.0, 1.0]])), np.array([-np.inf]), np.array([1.0]))
    out = session.solve(mip_gap=0.0)
    assert out.objective == pytest.approx(2.5)
    np.testing.assert_allclose(out.x, [0.0, 1.0], atol=1e-6)
    # A new binary column worth 5 that excludes x1; a ranged row 0.5 <= x0 + x2 <= 2.
    session.add_columns(np.zeros(1), np.ones(1), np.array([True]), np.array([5.0]))
    assert session.n_cols == 3
    session.add_rows(
        sp.csr_array(np.array([[0.0, 1.0, 1.0], [1.0, 0.0, 1.0]])),
        np.array([-np.inf, 0.5]), np.array([1.0, 2.0]),
    )
    out = session.solve(mip_gap=0.0, start=np.array([0.0, 0.0, 1.0]))
    assert out.termination is Termination.OPTIMAL and out.solution is SolutionStatus.OPTIMAL
    assert out.objective == pytest.approx(6.5)
    np.testing.assert_allclose(out.x, [1.0, 0.0, 1.0], atol=1e-6)
    # Infeasible after x0 + x1 + x2 >= 4 (only three binaries).
    session.add_rows(sp.csr_array(np.ones((1, 3))), np.array([4.0]), np.array([np.inf]))
    infeasible = session.solve()
    assert infeasible.termination is Termination.INFEASIBLE
    assert infeasible.solution is SolutionStatus.NONE


@pytest.mark.parametrize("solver", EXACT)
def test_lp_sessions_grow_and_resolve(solver):
    _usable(solver)
    form = _toy_form()
    form.integer = np.zeros(2, dtype=bool)  # the LP relaxation: what the cut loop re-solves
    session = get_backend(solver).load(form)
    if solver == "scip":
        assert type(session).__name__ == "ScipLPSession"  # warm-started LP interface
    assert session.solve().objective == pytest.approx(3.5)
    session.add_rows(sp.csr_array(np.array([[1.0, 1.0]])), np.array([-np.inf]), np.array([1.5]))
    out = session.solve()
    assert out.termination is Termination.OPTIMAL and out.objective == pytest.approx(3.0)
    np.testing.assert_allclose(out.x, [0.5, 1.0], atol=1e-7)
    # a column worth 3 per unit in [0, 2], sharing a budget with x1: x1 + x2 <= 1
    session.add_columns(np.zeros(1), np.full(1, 2.0), np.zeros(1, dtype=bool), np.array([3.0]))
    session.add_rows(sp.csr_array(np.array([[0.0, 1.0, 1.0]])), np.array([-np.inf]),
                     np.array([1.0]))
    out = session.solve()
    assert out.objective == pytest.approx(1.0 + 3.0 + 0.5)  # x = (1, 0, 1)
    np.testing.assert_allclose(out.x, [1.0, 0.0, 1.0], atol=1e-7)


def test_compiler_delta_matches_a_fresh_compile():
    problem = small_problem(0, "qpm-lazy")
    model = build_model(problem)
    compiler = ModelCompiler(model)
    before = compiler.form.n_cols
    from qpm.assignment.formulations.full import add_uniqueness

    assert add_uniqueness(model, problem, [(0, 1)]) == [(0, 1)]
    delta = compiler.update()
    assert delta.col_lo.size == problem.n_total  # one z per feature
    fresh = ModelCompiler(model).form
    assert compiler.form.n_cols == fresh.n_cols == before + problem.n_total
    assert compiler.form.n_rows == fresh.n_rows
    # Same rows up to order: compare the sorted dense rows with their bounds.
    def rows(form):
        order = {id(v): j for j, v in enumerate(fresh.columns)}
        perm = np.array([order[id(v)] for v in form.columns])
        dense = np.zeros((form.n_rows, fresh.n_cols))
        dense[:, perm] = form.A.toarray()
        full = np.column_stack([dense, form.row_lo, form.row_hi])
        return full[np.lexsort(full.T[::-1])]

    np.testing.assert_allclose(rows(compiler.form), rows(fresh))


def test_compiler_update_prices_new_variables_and_guards_old_ones():
    m = pyo.ConcreteModel()
    m.x = pyo.Var([0, 1], bounds=(0, 1))
    m.obj = pyo.Objective(expr=m.x[0] + 2 * m.x[1], sense=pyo.maximize)
    m.c = pyo.Constraint(expr=m.x[0] + m.x[1] <= 1)
    compiler = ModelCompiler(m)
    m.y = pyo.Var(bounds=(0, 4))  # declared, mentioned by no row: still gets its column
    m.obj.expr = m.x[0] + 2 * m.x[1] - 0.5 * m.y
    delta = compiler.update()
    np.testing.assert_array_equal(delta.c, [-0.5])
    np.testing.assert_array_equal(compiler.form.c, [1.0, 2.0, -0.5])
    m.c.deactivate()
    assert compiler.active_form().n_rows == 0 and compiler.form.n_rows == 1
    m.obj.expr = 3 * m.x[0] + 2 * m.x[1] - 0.5 * m.y
    with pytest.raises(QPMError, match="objective changed"):
        compiler.update()


def test_compiler_update_takes_a_variable_fixed_since_as_a_constant():
    m = pyo.ConcreteModel()
    m.x = pyo.Var([0, 1], bounds=(0, 5))
    m.obj = pyo.Objective(expr=m.x[0] + m.x[1])
    m.c = pyo.Constraint(expr=m.x[0] + m.x[1] <= 4)
    compiler = ModelCompiler(m)
    m.x[1].fix(3)
    m.d = pyo.Constraint(expr=2 * m.x[0] + m.x[1] <= 9)  # 2 x0 <= 6
    delta = compiler.update()
    np.testing.assert_allclose(delta.A.toarray(), [[2, 0]])
    np.testing.assert_allclose(delta.row_hi, [6])


def test_compiler_reads_matrix_constraint_rows_with_and_without_a_fixed_variable():
    from pyomo.core.base.matrix_constraint import MatrixConstraint

    m = pyo.ConcreteModel()
    m.x = pyo.Var([0, 1, 2], bounds=(0, 4))
    m.o = pyo.Objective(expr=m.x[0] + m.x[1] + m.x[2])
    A = sp.csr_array(np.array([[1.0, 2.0, 0.0], [0.0, 1.0, 3.0]]))
    m.c = MatrixConstraint(A.data, A.indices, A.indptr, [None, 1.0], [5.0, None],
                           list(m.x.values()))
    form = ModelCompiler(m).form  # read from the block's CSR arrays
    np.testing.assert_array_equal(form.A.toarray(), A.toarray())
    np.testing.assert_array_equal(form.row_lo, [-np.inf, 1])
    np.testing.assert_array_equal(form.row_hi, [5, np.inf])
    m.x[1].fix(1.0)  # now row by row through Pyomo's walker, x[1] a constant
    form = ModelCompiler(m).form
    assert [v.name for v in form.columns] == ["x[0]", "x[2]"]
    np.testing.assert_array_equal(form.A.toarray(), [[1, 0], [0, 3]])
    np.testing.assert_array_equal(form.row_lo, [-np.inf, 0])
    np.testing.assert_array_equal(form.row_hi, [3, np.inf])


def test_compiler_gives_pyomos_standard_form():
    from pyomo.repn.plugins.standard_form import LinearStandardFormCompiler

    model = build_model(small_problem(0, "qpm"))
    form = ModelCompiler(model).form
    std = LinearStandardFormCompiler().write(model, mixed_form=True, set_sense=None)
    order = {id(v): j for j, v in enumerate(form.columns)}
    perm = np.array([order[id(v)] for v in std.columns])
    assert perm.size == form.n_cols
    assert [id(r.constraint) for r in std.rows] == [id(c) for c in
                                                    ModelCompiler(model).row_constraints]
    np.testing.assert_array_equal(form.A.toarray()[:, perm], std.A.toarray())
    np.testing.assert_array_equal(form.c[perm], std.c.toarray().ravel())
    sense = np.array([r.bound_type for r in std.rows])  # 0: ==, 1: <=, -1: >=
    np.testing.assert_array_equal(form.row_lo, np.where(sense == 1, -np.inf, std.rhs))
    np.testing.assert_array_equal(form.row_hi, np.where(sense == -1, np.inf, std.rhs))


def test_installed_says_how_to_install_a_missing_solver_package():
    assert installed("numpy") == (Availability.AVAILABLE, "")
    state, why = installed("qpm_no_such_solver")
    assert state is Availability.NOT_INSTALLED
    assert why == "qpm_no_such_solver is not installed; pip install qpm_no_such_solver."


def test_unknown_backend_lists_choices():
    with pytest.raises(QPMError, match="highs"):
        get_backend("cplex")


def test_gurobi_fallback_and_strict_on_a_model_over_the_size_limit():
    from qpm.assignment.backends.gurobi import size_limited

    _usable("gurobi")
    if not size_limited():
        pytest.skip("a full Gurobi licence takes any model")
    rng = np.random.default_rng(0)
    problem = AssignmentProblem(A=rng.random((100, 25)), n_features=10, per_class=2,
                                preset="unbalanced")
    with pytest.raises(QPMError, match="licence"):
        solve(problem, solver="gurobi", strict_solver=True, time_limit=30)
    result = solve(problem, solver="gurobi", time_limit=60)
    assert result.solver == "highs" and "size-limited" in result.fallback
    assert result.verified


def test_compiler_reads_every_constraint_shape():
    m = pyo.ConcreteModel()
    m.x = pyo.Var(bounds=(0, 4))
    m.y = pyo.Var(domain=pyo.Binary)
    m.p = pyo.Param(initialize=3, mutable=True)
    m.f = pyo.Var(initialize=2)
    m.f.fix()  # a fixed variable is a constant
    m.o = pyo.Objective(expr=3 * m.x + 2 * m.y + 5 + m.f, sense=pyo.maximize)
    m.c1 = pyo.Constraint(expr=m.x + m.y <= 3)
    m.c2 = pyo.Constraint(expr=m.x - m.y >= 1)
    m.c3 = pyo.Constraint(expr=m.x + 2 * m.y == 2)
    m.c4 = pyo.Constraint(expr=pyo.inequality(1, m.x + m.y + 1, 5))
    m.c5 = pyo.Constraint(expr=m.x * m.p + m.f * m.y <= m.y + 7)  # -> 3x + y <= 7
    m.c6 = pyo.Constraint(expr=(m.x + m.y) * 2 >= 1)  # product: the slow path
    m.b = pyo.Block()
    m.b.z = pyo.Var(domain=pyo.Integers, bounds=(-2, None))
    m.b.c = pyo.Constraint(expr=m.b.z + m.x <= 7)
    form = ModelCompiler(m).form
    assert [v.name for v in form.columns] == ["x", "y", "b.z"]
    assert form.maximize and form.c0 == 7.0
    np.testing.assert_allclose(form.c, [3, 2, 0])
    np.testing.assert_allclose(form.A.toarray(), [
        [1, 1, 0], [1, -1, 0], [1, 2, 0], [1, 1, 0], [3, 1, 0], [2, 2, 0], [1, 0, 1]])
    np.testing.assert_allclose(form.row_lo, [-np.inf, 1, 2, 0, -np.inf, 1, -np.inf])
    np.testing.assert_allclose(form.row_hi, [3, np.inf, 2, 4, 7, np.inf, 7])
    np.testing.assert_allclose(form.col_lo, [0, 0, -2])
    np.testing.assert_allclose(form.col_hi, [4, 1, np.inf])
    assert form.integer.tolist() == [False, True, True]
    m.q = pyo.Constraint(expr=m.x ** 2 <= 1)
    with pytest.raises(QPMError, match="not linear"):
        ModelCompiler(m)


def test_time_limit_still_returns_a_verified_assignment():
    problem = make_instance("small", seed=0)
    result = solve(problem, solver="highs", formulation="full", time_limit=3.0)
    assert result.status == "time_limit" and result.termination.stopped_early
    assert result.solution is SolutionStatus.FEASIBLE
    assert result.verified and result.matrix is not None
    assert result.bound is None or result.bound >= result.objective - 1e-6


def test_highs_solves_in_one_process_with_changing_thread_counts():
    # HiGHS shares one thread pool per process; asking for another size used to fail
    # every later solve with model status "Not Set".
    problem = small_problem(0)
    value, _, _ = brute_force(problem)
    for threads in (None, 1, 2, 1):
        result = solve(problem, solver="highs", threads=threads)
        assert result.status == "optimal", (threads, result.message)
        assert result.objective == pytest.approx(value, abs=1e-6)


def test_bounds_count_only_after_an_optimal_or_stopped_solve():
    from qpm.assignment.backends.base import proven_bound

    assert proven_bound(Termination.TIME_LIMIT, 5.0) == 5.0
    assert proven_bound(Termination.INTERRUPTED, 5.0) == 5.0
    assert proven_bound(Termination.INFEASIBLE, 5.0) is None  # no bound without a search
    assert proven_bound(Termination.OPTIMAL, float("inf")) is None
    assert proven_bound(Termination.OPTIMAL, 1e20, infinity=1e19) is None  # solver "infinity"


def test_highs_lp_resolves_get_their_own_time_limit():
    # HiGHS's LP solvers compare time_limit with the summed time of all runs of a session:
    # a re-solve given less than the time already spent used to stop at once ("time_limit"),
    # which ended the cut loop's root at half the budget on the ImageNet size.
    _usable("highs")
    rng = np.random.default_rng(0)
    m = n = 2500
    A = sp.random(m, n, density=0.01, random_state=0, format="csr")
    form = MatrixForm(c=rng.random(n), c0=0.0, maximize=True, A=A, row_lo=np.full(m, -np.inf),
                      row_hi=5 * rng.random(m), col_lo=np.zeros(n), col_hi=np.ones(n),
                      integer=np.zeros(n, dtype=bool), columns=[None] * n,
                      start=np.full(n, np.nan))
    session = get_backend("highs").load(form)
    first = session.solve()
    assert first.termination is Termination.OPTIMAL
    # One more row cutting off the optimum: a few dual simplex iterations.
    row = sp.csr_array(np.ones((1, n)))
    session.add_rows(row, np.array([-np.inf]), np.array([0.9 * float(first.x.sum())]))
    again = session.solve(time_limit=max(first.solve_seconds / 2, 0.05))
    assert again.termination is Termination.OPTIMAL, again.termination
    assert again.objective < first.objective


def test_gurobi_parameters_reach_every_model_of_the_solve(monkeypatch):
    _usable("gurobi")
    from qpm.assignment.backends import gurobi

    seen = []
    original = gurobi.GurobiSession.solve

    def spy(self, *args, **kwargs):
        seen.append({p: self._m.getParamInfo(p)[2] for p in gurobi.CUT_PARAMETERS})
        return original(self, *args, **kwargs)

    monkeypatch.setattr(gurobi.GurobiSession, "solve", spy)
    params = {"PSDCuts": 1, "RLTCuts": 2, "BQPCuts": 2, "PreQLinearize": 1}
    problem = small_problem(0)
    result = solve(problem, solver="gurobi", strict_solver=True, gurobi_params=params)
    assert result.verified and result.solver == "gurobi"
    assert seen and all(s == params for s in seen)
    with pytest.raises(QPMError, match="refuses parameter NoSuchParam"):
        solve(problem, solver="gurobi", strict_solver=True, gurobi_params={"NoSuchParam": 1})
    with pytest.raises(QPMError, match="the solver is 'highs'"):
        solve(problem, solver="highs", gurobi_params=params)
