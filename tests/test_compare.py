"""``qpm compare``: every solver in its own process; crashing, hanging and missing solvers get
rows of their own while the others still run; one table and three files."""

from __future__ import annotations

import json
import re
import time

import pytest
from fake_backends import Crash, Hang, Missing

from qpm.assignment import backends as registry
from qpm.assignment.cache import load_similarities, save_similarities
from qpm.assignment.compare import Limits, compare
from qpm.assignment.compare_report import format_table
from qpm.assignment.synthetic import make_instance
from qpm.assignment.trace import Trace
from qpm.cli import main


@pytest.fixture()
def test_backends(monkeypatch):
    for name, cls in (("crash", Crash), ("missing", Missing), ("hang", Hang)):
        monkeypatch.setitem(registry._BACKENDS, name, cls)


def test_crashing_missing_and_hanging_solvers_get_rows_and_the_others_run(test_backends):
    problem = make_instance("tiny", seed=0)
    runs = [("crash", "auto"), ("highs", "auto"), ("missing", "auto"), ("hang", "auto")]
    limits = Limits(time_limit=1.0, grace=2.0, memory_gb=8.0)
    t0 = time.perf_counter()
    cmp = compare(problem, runs, limits, jobs=4)
    assert time.perf_counter() - t0 < 60
    rows = {r.asked: r for r in cmp.rows}
    assert [r.asked for r in cmp.rows] == [s for s, _ in runs]  # the order asked for
    assert rows["crash"].status == "crashed" and "died" in rows["crash"].note
    assert rows["missing"].status == "missing" and "not installed" in rows["missing"].note
    assert rows["hang"].status == "killed" and not rows["hang"].verified
    r = rows["highs"]
    assert r.verified and r.objective is not None and r.ran == "highs" and r.peak_mb > 0
    assert r.first_answer is not None and r.first_answer <= r.final_answer
    assert r.trace and r.trace[-1][0] <= r.final_answer + 1e-6
    assert cmp.best_bound == r.bound and cmp.best_objective == r.objective
    assert cmp.to_bound(r) == pytest.approx(max(0.0, r.bound - r.objective) / r.objective)
    table = format_table(cmp)
    assert len([line for line in table.splitlines() if line.startswith("crash")]) == 1
    assert "*" in table


def test_trace_keeps_improvements_only():
    t = Trace()
    for v in (1.0, 0.5, 2.0, 2.0):
        t.incumbent(v)
    for v in (9.0, 10.0, 3.0, float("inf")):
        t.bound(v)
    assert [p[2] for p in t.points if p[1] == "incumbent"] == [1.0, 2.0]
    assert [p[2] for p in t.points if p[1] == "bound"] == [9.0, 3.0]
    assert t.first("incumbent") <= t.now()


def test_compare_cli_uses_the_recorded_problem_and_writes_three_files(tmp_path, capsys):
    p = make_instance("tiny", seed=0)
    sims = save_similarities(tmp_path / "sims.npz", p.A, p.R, p.b,
                             settings={"n_features": 10, "per_class": 3, "preset": "qpm",
                                       "tau_rule": "tight"})
    assert load_similarities(sims).settings["n_features"] == 10
    out = tmp_path / "cmp"
    code = main(["compare", str(sims), "--solvers", "highs,greedy", "--time-limit", "20",
                 "--formulation", "cuts,full", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0
    assert "n=10, k=3" in captured.out and "recorded" in captured.out
    assert len(re.findall(r"^solver +form", captured.out, re.M)) == 1  # one table
    data = json.loads((out / "compare.json").read_text())
    # greedy has no formulation: it runs once; the independent bound (auto: lp) has a row
    assert [(r["asked"], r["formulation"]) for r in data["rows"]] == [
        ("highs", "cuts"), ("highs", "full"), ("greedy", "-"), ("bound:lp", "-")]
    assert data["settings"]["n_features"] == 10 and data["time_limit"] == 20
    assert all(r["verified"] for r in data["rows"][:3])
    greedy, certificate = data["rows"][2], data["rows"][3]
    assert greedy["bound"] is None and greedy["trace"][-1][1] == "incumbent"
    assert greedy["to_best_bound"] >= 0
    assert certificate["status"] == "bound" and certificate["objective"] is None
    assert certificate["bound"] >= data["best_objective"] - 1e-6
    assert data["best_bound_by"] in {r["label"] for r in data["rows"]}
    assert (out / "compare.csv").read_text().count("\n") == 5
    assert (out / "compare.png").read_bytes()[:4] == b"\x89PNG"
    # The figure's labels are plain text: no mathtext left on the log-time axis.
    from qpm.assignment import compare_report
    from qpm.text import plain_text

    with plain_text():
        fig = compare_report.figure(compare_report.read(out / "compare.json"), "t")
        fig.canvas.draw()
        ticks = [t.get_text() for t in fig.axes[0].get_xticklabels() if t.get_text()]
    assert ticks and not any("$" in t or "mathdefault" in t for t in ticks), ticks


def test_compare_figure_when_every_solver_finishes_at_once():
    # The unreadable figure: all runs done in a few hundredths of a second, equal
    # objectives (an offset axis "+7.61183e2", no x ticks, bounds drawn as vertical lines).
    from qpm.assignment import compare_report
    from qpm.assignment.compare import Comparison, Row
    from qpm.text import plain_text

    def row(solver, t, obj=761.18312, bound=761.18312):
        return Row(solver, "cuts", "optimal", objective=obj, bound=bound, gap=0.0,
                   first_answer=t, final_answer=t, verified=True,
                   trace=[(t, "incumbent", obj), (t, "bound", bound)])

    at_once = Comparison([row("highs", 0.02), row("scip", 0.03), row("gurobi", 0.02),
                          row("greedy", 0.01, bound=None)])
    with plain_text():
        fig = compare_report.figure(at_once, "tiny")
        fig.canvas.draw()
        ax = fig.axes[0]
        assert len(ax.patches) == 4  # one bar per run
        assert ax.xaxis.get_offset_text().get_text() == ""  # no "+7.61183e2"
        assert [t.get_text() for t in ax.get_yticklabels()] == ["highs", "scip", "gurobi",
                                                                 "greedy"]
        texts = [t.get_text() for t in ax.texts]
        assert texts[0].startswith("objective 761.1831   bound 761.1831   gap 0.000 %")
        assert len([t for t in ax.get_xticklabels() if t.get_text()]) >= 3
        # spread over time: incumbent and bound over a log time axis, without an offset
        spread = Comparison([row("highs", 0.05, obj=700.0), row("scip", 30.0, obj=761.1)])
        fig = compare_report.figure(spread, "t")
        fig.canvas.draw()
        ax = fig.axes[0]
        assert not ax.patches and ax.get_xscale() == "log"
        assert ax.yaxis.get_offset_text().get_text() == ""


def test_compare_bad_input_is_one_line(tmp_path, capsys):
    p = make_instance("tiny", seed=0)
    sims = save_similarities(tmp_path / "sims.npz", p.A, p.R, p.b)
    with pytest.raises(SystemExit) as refused:  # argparse checks --solvers against the registry
        main(["compare", str(sims), "--solvers", "highs,cplex"])
    assert refused.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown solver 'cplex'" in err


@pytest.mark.parametrize("solver, formulation", [("highs", "full"), ("scip", "full"),
                                                 ("highs", "cuts"), ("scip", "cuts")])
def test_traced_solves_record_valid_bounds_and_incumbents(solver, formulation):
    from qpm.assignment.solving import solve

    problem = make_instance("tiny", seed=0)
    trace = Trace()
    r = solve(problem, solver=solver, formulation=formulation, time_limit=60, mip_gap=0,
              trace=trace)
    assert r.status == "optimal" and r.trace == trace.to_list()
    inc, bounds = trace.series("incumbent"), trace.series("bound")
    assert inc and bounds
    tol = 1e-6 * max(1.0, abs(r.objective))
    # every incumbent is a feasible value (never above the optimum), every bound valid
    assert all(v <= r.objective + tol for _, v in inc) and inc[-1][1] == pytest.approx(r.objective)
    assert all(v >= r.objective - tol for _, v in bounds)
    assert [t for t, _ in inc] == sorted(t for t, _ in inc)
