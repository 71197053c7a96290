"""``qpm solve`` end to end through qpm.cli.main, and every bad input as exit code 2."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fake_backends import Missing

from qpm.assignment import backends as backend_registry
from qpm.assignment.cache import save_similarities
from qpm.assignment.synthetic import make_instance
from qpm.cli import main

KEYS = {"status", "objective", "bound", "gap", "verified", "solver", "selected_features",
        "assignment", "times", "tau", "tau_rule"}


@pytest.fixture(scope="module")
def tiny_sims(tmp_path_factory):
    p = make_instance("tiny", seed=0)
    return save_similarities(tmp_path_factory.mktemp("sims") / "SIMS.npz", p.A, p.R, p.b)


def _one_line_error(capsys, code: int) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("qpm solve: error:") and "Traceback" not in err
    return err


def _run(sims, tmp_path, *extra: str) -> int:
    return main(["solve", str(sims), "--n-features", "10", "--per-class", "3",
                 "--out", str(tmp_path / "RESULT.json"), *extra])


@pytest.mark.parametrize("solver", ["highs", "scip"])
def test_solve_writes_a_verified_result(tiny_sims, tmp_path, capsys, solver):
    assert _run(tiny_sims, tmp_path, "--solver", solver, "--time-limit", "120") == 0
    out = capsys.readouterr().out
    assert "objective" in out and "handoff" in out and solver in out
    data = json.loads((tmp_path / "RESULT.json").read_text())
    assert KEYS <= set(data)
    assert data["verified"] is True and data["status"] == "optimal"
    assert data["solver"] == solver
    assert data["tau_rule"] == "paper" and data["tau"] > 0
    assert "(paper rule)" in out
    assert len(data["selected_features"]) == 10
    assert set(data["assignment"]) == {str(c) for c in range(10)}
    assert all(len(f) == 3 for f in data["assignment"].values())
    assert set(data["times"]) == {"build", "handoff", "solve"}


def test_highs_and_scip_agree_through_the_cli(tiny_sims, tmp_path, capsys):
    values = {}
    for solver in ("highs", "scip"):
        for formulation in ("full", "cuts"):
            out = tmp_path / f"{solver}-{formulation}.json"
            code = main(["solve", str(tiny_sims), "--n-features", "10", "--per-class", "3",
                         "--solver", solver, "--formulation", formulation, "--mip-gap", "0",
                         "--out", str(out)])
            assert code == 0
            values[solver, formulation] = json.loads(out.read_text())["objective"]
    assert max(values.values()) - min(values.values()) < 1e-6


def test_default_gurobi_runs_or_records_its_fallback(tiny_sims, tmp_path, capsys):
    assert _run(tiny_sims, tmp_path) == 0
    data = json.loads((tmp_path / "RESULT.json").read_text())
    assert data["verified"]
    if data["solver"] != "gurobi":
        assert data["fallback"] and "HiGHS" in data["fallback"]


def _sims(tmp_path, A, R=None, b=None):
    return save_similarities(tmp_path / "bad.npz", A, R, b)


@pytest.mark.parametrize(
    "make, extra, words",
    [
        (lambda r: (np.where(r.random((12, 3)) > 0.9, np.nan, 1.0), None), (), "NaN"),
        (lambda r: (np.full((12, 3), np.inf), None), (), "NaN or infinite"),
        (lambda r: (r.random((12, 3)), r.random((5, 5))), (), "R has shape"),
        (lambda r: (r.random((12, 3)), None), ("--n-features", "20"), "larger than the 12"),
        (lambda r: (r.random((12, 3)), None), ("--n-features", "4", "--per-class", "5"),
         "per_class=5"),
        (lambda r: (r.random((12, 30)), None), ("--n-features", "4", "--per-class", "2"),
         "No unique assignment"),
        (lambda r: (r.random((12, 3)), None), ("--solver", "cplex"), "invalid choice"),
        (lambda r: (r.random((12, 3)), None), ("--preset", "nope"), "Unknown preset"),
        (lambda r: (r.random((12, 3)), None), ("--formulation", "nope"), "Unknown formulation"),
        (lambda r: (r.random((12, 3)), None), ("--preset", "unbalanced", "--formulation",
                                                "cuts"), "cut formulation cannot"),
        (lambda r: (r.random((12, 3)), None), ("--time-limit", "-1"), "--time-limit"),
        (lambda r: (r.random((12, 3)), None), ("--mip-gap", "2"), "--mip-gap"),
        (lambda r: (r.random((12, 3)), None), ("--tau-rule", "loose"), "Unknown tau rule"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, make, extra, words):
    A, R = make(np.random.default_rng(0))
    path = _sims(tmp_path, A, R)
    try:
        code = main(["solve", str(path), "--n-features", "4", "--per-class", "1", "--solver",
                     "highs", "--out", str(tmp_path / "r.json"), *extra])
    except SystemExit as exc:  # argparse refused an argument (e.g. --solver, from choices)
        code = exc.code
    assert words in _one_line_error(capsys, code)
    assert not (tmp_path / "r.json").exists()


def test_missing_corrupt_and_pickled_files(tmp_path, capsys):
    out = ["--out", str(tmp_path / "r.json"), "--solver", "highs"]
    assert "does not exist" in _one_line_error(
        capsys, main(["solve", str(tmp_path / "nope.npz"), *out]))
    bad = tmp_path / "corrupt.npz"
    bad.write_bytes(b"PK\x03\x04 this is not a zip archive")
    assert "corrupt" in _one_line_error(capsys, main(["solve", str(bad), *out]))
    truncated = tmp_path / "truncated.npz"
    save_similarities(truncated, np.random.default_rng(0).random((12, 3)))
    truncated.write_bytes(truncated.read_bytes()[:60])
    _one_line_error(capsys, main(["solve", str(truncated), *out]))
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, A=np.array([{"a": 1}], dtype=object), format_version=np.array(1))
    assert "pickle" in _one_line_error(capsys, main(["solve", str(pickled), *out]))


def test_solver_not_installed(tiny_sims, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(backend_registry._BACKENDS, "missing", Missing)
    err = _one_line_error(capsys, _run(tiny_sims, tmp_path, "--solver", "missing"))
    assert "not usable" in err and "not installed" in err


def test_gurobi_missing_falls_back_unless_strict(tiny_sims, tmp_path, capsys, monkeypatch):
    from qpm.assignment.backends import gurobi

    monkeypatch.setattr(gurobi.GurobiBackend, "available",
                        lambda self: (False, "gurobipy is not installed"))
    err = _one_line_error(capsys, _run(tiny_sims, tmp_path, "--strict-solver"))
    assert "gurobi" in err
    assert _run(tiny_sims, tmp_path) == 0
    captured = capsys.readouterr()
    assert len(captured.err.strip().splitlines()) == 1  # the one fallback line
    data = json.loads((tmp_path / "RESULT.json").read_text())
    assert data["solver"] == "highs" and "not installed" in data["fallback"]


def test_strict_solver_with_a_model_over_the_licence(tmp_path, capsys):
    from qpm.assignment.backends.gurobi import GurobiBackend, size_limited

    if not GurobiBackend().available()[0] or not size_limited():
        pytest.skip("needs gurobipy with the size-limited licence")
    p = make_instance("small", seed=0)
    sims = save_similarities(tmp_path / "small.npz", p.A, p.R, p.b)
    code = main(["solve", str(sims), "--n-features", "20", "--per-class", "5",
                 "--strict-solver", "--formulation", "full", "--time-limit", "60",
                 "--out", str(tmp_path / "r.json")])
    assert "licence" in _one_line_error(capsys, code)


def test_public_api_is_lazy_and_torch_free():
    import subprocess
    import sys

    code = (
        "import sys, qpm.assignment as a\n"
        "assert 'pyomo' not in sys.modules and 'torch' not in sys.modules\n"
        "from qpm.assignment import solve, make_instance, register_preset, register_backend\n"
        "r = solve(make_instance('tiny', 0), solver='highs')\n"
        "assert r.verified and 'torch' not in sys.modules, r\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
