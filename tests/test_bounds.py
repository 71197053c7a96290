"""Upper bounds (qpm.assignment.bounds, ``qpm bound``): never below the optimum, on every preset.

The ground truth is the brute-force solver of ``tests/bruteforce.py`` (every selection
enumerated), on small instances of every generator family and on random ones (hypothesis).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from bruteforce import brute_force
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qpm.assignment.bounds import Bound, certify, method_names, upper_bound
from qpm.assignment.cache import save_similarities
from qpm.assignment.problem import AssignmentProblem
from qpm.assignment.result import AssignmentResult
from qpm.assignment.solving import solve
from qpm.assignment.synthetic import FAMILIES, make_instance
from qpm.cli import main
from qpm.errors import QPMError

pytestmark = pytest.mark.usefixtures("one_thread")

PRESETS = ("qpm", "unbalanced", "no-redundancy", "qpm-lazy")
TOL = 1e-6


def small(family: str, seed: int, preset: str, F: int = 9, C: int = 4, n: int = 4,
          k: int = 2) -> AssignmentProblem:
    """F features and C classes of a tiny generated instance (its R, its b), brute-forceable."""
    p = make_instance("tiny", seed=seed, family=family)
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(p.n_total, F, replace=False))
    return AssignmentProblem(A=p.A[rows][:, :C], R=p.R[np.ix_(rows, rows)], b=p.b[rows],
                             n_features=n, per_class=k, preset=preset)


def methods_for(problem: AssignmentProblem) -> list[str]:
    return ["topk", "auto"] + (["lp"] if problem.rules.per_class_exact else [])


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_bound_lies_above_the_brute_force_optimum(family, seed):
    for preset in PRESETS:
        problem = small(family, seed, preset)
        optimum = brute_force(problem)[0]
        for method in methods_for(problem):
            found = upper_bound(problem, method)
            assert found.value >= optimum - TOL * max(1.0, abs(optimum)), (preset, method)
            assert found.method in ("topk", "lp") and found.seconds >= 0


def test_the_lp_bound_is_tighter_than_topk_where_redundancy_binds():
    # lowrank, seed 1: the penalty moves the optimum, and only the lp bound sees it
    problem = small("lowrank", 1, "qpm")
    optimum = brute_force(problem)[0]
    lp, topk = upper_bound(problem, "lp").value, upper_bound(problem, "topk").value
    assert optimum - TOL <= lp < topk


def test_the_topk_bound_is_exact_without_redundancy_when_its_descent_converges():
    problem = small("default", 0, "no-redundancy")
    optimum = brute_force(problem)[0]
    assert upper_bound(problem, "topk").value == pytest.approx(optimum, abs=1e-9)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(F=st.integers(4, 8), C=st.integers(1, 4), data=st.data())
def test_random_instances_are_never_bounded_below_their_optimum(F, C, data):
    n = data.draw(st.integers(2, min(F, 5)))
    k = data.draw(st.integers(1, min(n, 3)))
    preset = data.draw(st.sampled_from(["qpm", "unbalanced", "no-redundancy"]))
    seed = data.draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(F, C)) * data.draw(st.sampled_from([0.01, 1.0, 30.0]))
    R = np.triu(rng.uniform(0, 1, size=(F, F)), 1)
    b = rng.uniform(-0.3, 0.3, size=F)
    try:
        problem = AssignmentProblem(A=A, R=R, b=b, n_features=n, per_class=k, preset=preset,
                                    redundancy_weight=data.draw(st.sampled_from([0.5, 1.0, 20.0])),
                                    tau=data.draw(st.sampled_from([None, 0.2, 0.7])))
    except QPMError:  # e.g. too few distinct k-sets for C unique classes
        return
    optimum = brute_force(problem)[0]
    for method in methods_for(problem):
        assert upper_bound(problem, method).value >= optimum - TOL * max(1.0, abs(optimum))


def test_a_solve_reports_its_certificate_and_the_gap_to_the_best_bound():
    problem = make_instance("tiny", seed=3)
    result = solve(problem, solver="greedy", bound_method="lp")
    assert result.bound is None and result.certificate["method"] == "lp"
    assert result.best_bound == result.certificate["bound"] >= result.objective - TOL
    assert result.gap_to_best_bound == pytest.approx(
        (result.best_bound - result.objective) / abs(result.objective))
    back = AssignmentResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert back.certificate == result.certificate and back.best_bound == result.best_bound
    exact = solve(problem, solver="highs", bound_method="topk")
    assert exact.best_bound == min(exact.bound, exact.certificate["bound"])


def test_a_bound_below_a_verified_answer_is_an_error_not_a_certificate(monkeypatch):
    problem = make_instance("tiny", seed=0)
    result = solve(problem, solver="greedy")
    monkeypatch.setattr("qpm.assignment.bounds.upper_bound",
                        lambda *a, **k: Bound(result.objective - 1.0, "topk", 0.0))
    with pytest.raises(QPMError, match="lies below the verified objective"):
        certify(problem, result, "topk")


def test_the_lp_bound_refuses_budget_presets_in_one_line():
    problem = small("default", 0, "unbalanced")
    with pytest.raises(QPMError, match="exactly k features per class"):
        upper_bound(problem, "lp")
    assert upper_bound(problem, "auto").method == "topk"
    with pytest.raises(QPMError, match="Unknown bound method"):
        upper_bound(problem, "sdp")


@pytest.fixture(scope="module")
def sims(tmp_path_factory):
    p = make_instance("tiny", seed=0)
    return save_similarities(tmp_path_factory.mktemp("sims") / "SIMS.npz", p.A, p.R, p.b)


def test_qpm_bound_prints_a_bound_method_and_time(sims, capsys):
    assert main(["bound", str(sims), "--n-features", "10", "--per-class", "3", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {"bound", "method", "seconds"} <= set(data) and data["method"] == "lp"
    problem = make_instance("tiny", seed=0, n_features=10, per_class=3)
    optimum = solve(problem, solver="highs").objective
    assert data["bound"] >= optimum - TOL
    assert main(["bound", str(sims), "--n-features", "10", "--per-class", "3",
                 "--method", "topk", "--preset", "unbalanced"]) == 0
    out = capsys.readouterr().out
    assert "bound" in out and "topk" in out and "seconds" in out


def test_qpm_bound_help_lists_the_methods_in_braces(capsys):
    with pytest.raises(SystemExit):
        main(["bound", "--help"])
    assert "{" + ",".join(method_names()) + "}" in capsys.readouterr().out


def test_qpm_compare_adds_an_independent_bound_row(sims, capsys):
    assert main(["compare", str(sims), "--n-features", "10", "--per-class", "3",
                 "--solvers", "greedy", "--bounds", "lp", "--time-limit", "60"]) == 0
    out = capsys.readouterr().out
    assert "bound:lp" in out and "proved by bound:lp" in out


def test_qpm_solve_reports_the_certificate(sims, capsys):
    args = ["solve", str(sims), "--n-features", "10", "--per-class", "3", "--solver", "greedy"]
    assert main([*args, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["certificate"]["method"] == "topk" and data["bound"] is None
    assert data["best_bound"] == data["certificate"]["bound"] >= data["objective"]
    assert 0 <= data["gap_to_best_bound"] < 1
    assert main([*args, "--bound-method", "none"]) == 0
    assert "certificate  -" in capsys.readouterr().out
    assert main([*args, "--bound-method", "lp", "--bound-time", "30"]) == 0
    assert "(lp," in capsys.readouterr().out
