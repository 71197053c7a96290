"""`qpm train --strict-solver` and the printed default time limit for large problems (plain
lines in a pipe and the recorded problem: tests/test_pipeline.py's CLI run)."""

from __future__ import annotations

import pytest

from qpm.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = ["--epochs", "1", "--ft-epochs", "1", "--device", "cpu", "--image-size", "32",
        "--arch", "small-cnn", "--batch-size", "6"]


def test_strict_solver_fails_instead_of_falling_back(tiny_cub, tmp_path, capsys, monkeypatch):
    from qpm.assignment.backends import gurobi

    monkeypatch.setattr(gurobi.GurobiBackend, "available",
                        lambda self: (False, "gurobipy is not installed"))
    run_dir = tmp_path / "strict"
    code = main(["train", "--dataset", "cub2011", "--data-root", str(tiny_cub), *FAST,
                 "--n-features", "6", "--per-class", "2", "--strict-solver",
                 "--run-dir", str(run_dir)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().splitlines()[-1].startswith("qpm train: error: Solver 'gurobi'")
    assert (run_dir / "similarities.npz").exists() and not (run_dir / "assignment.json").exists()


def test_large_problems_get_a_printed_default_time_limit(tmp_path, capsys):
    import numpy as np

    from qpm.assignment.cache import save_similarities
    from qpm.assignment.limits import LARGE_TIME_LIMIT, default_time_limit

    assert default_time_limit(2048, 200) == LARGE_TIME_LIMIT
    assert default_time_limit(128, 10) is None
    rng = np.random.default_rng(0)
    sims = save_similarities(tmp_path / "big.npz", rng.random((1000, 100)))
    assert main(["solve", str(sims), "--solver", "greedy", "-q"]) == 0
    assert capsys.readouterr().err == ""
    assert main(["solve", str(sims), "--solver", "greedy"]) == 0
    assert f"using {LARGE_TIME_LIMIT:.0f} s" in capsys.readouterr().err
