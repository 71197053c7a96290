"""`qpm train --strict-solver` and the printed default time limit for large problems (plain
lines in a pipe and the recorded problem: tests/test_pipeline.py's CLI run)."""

from __future__ import annotations

import re

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


def test_every_solve_gets_a_printed_default_time_limit_scaled_with_its_size(tmp_path, capsys):
    import numpy as np

    from qpm.assignment.cache import save_similarities
    from qpm.assignment.limits import (
        LARGE_TIME_LIMIT,
        MIN_TIME_LIMIT,
        default_time_limit,
    )

    assert default_time_limit(2048, 200) == LARGE_TIME_LIMIT
    assert default_time_limit(128, 10) == MIN_TIME_LIMIT
    # the 512-feature ResNet-18 with 4 classes: no longer unlimited
    assert default_time_limit(512, 4) == MIN_TIME_LIMIT
    sizes = [(128, 10), (512, 50), (1000, 50), (2048, 40), (2048, 200), (2048, 1000)]
    limits = [default_time_limit(f, c) for f, c in sizes]
    assert limits == sorted(limits) and MIN_TIME_LIMIT < limits[2] < LARGE_TIME_LIMIT
    rng = np.random.default_rng(0)
    sims = save_similarities(tmp_path / "big.npz", rng.random((1000, 100)))
    assert main(["solve", str(sims), "--solver", "greedy", "-q"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    assert re.search(rf"time limit +{LARGE_TIME_LIMIT:g} s \(no --time-limit given: the default "
                     r"for this size\)", captured.out)
    assert main(["solve", str(sims), "--solver", "greedy", "--json"]) == 0
    assert f"time limit {LARGE_TIME_LIMIT:g} s (no --time-limit" in capsys.readouterr().err
    small = save_similarities(tmp_path / "small.npz", rng.random((64, 4)))
    assert main(["solve", str(small), "--solver", "highs", "--time-limit", "7"]) == 0
    assert re.search(r"time limit +7 s\n", capsys.readouterr().out)
    assert main(["compare", str(small), "--solvers", "highs"]) == 0
    captured = capsys.readouterr()
    assert f"time limit {MIN_TIME_LIMIT:g} s (no --time-limit given" in captured.out
    # n from C·k when neither given nor recorded: 4 classes x k=5 use at most 20 features
    assert "n=20, k=5" in captured.out


def test_n_defaults_to_what_the_classes_can_use(tiny_imagefolder, tmp_path):
    from qpm.assignment.limits import default_n_features
    from qpm.pipeline.checks import check_before_training
    from qpm.pipeline.stages import RunContext
    from qpm.run_folder.config import TrainConfig

    assert default_n_features(200, 5, 2048) == 50  # CUB: the paper's 50
    assert default_n_features(10, 5, 128) == 50  # the digit sets: unchanged
    assert default_n_features(4, 5, 512) == 20  # few classes: never more than C·k
    assert default_n_features(3, 5, 12) == 12  # nor than the backbone has
    cfg = TrainConfig(dataset="imagefolder", data_root=str(tiny_imagefolder), arch="small-cnn",
                      image_size=16, per_class=2, run_dir=str(tmp_path / "r")).resolve()
    assert cfg.n_features is None
    lines: list[str] = []
    sized = check_before_training(cfg, RunContext(cfg, tmp_path / "r"), lines)
    assert sized.n_features == 6  # 3 classes x k=2
    assert any(line.startswith("n = 6 features (--n-features not given") for line in lines)
    given = TrainConfig(dataset="imagefolder", data_root=str(tiny_imagefolder),
                        arch="small-cnn", image_size=16, n_features=9, per_class=2).resolve()
    assert check_before_training(given, RunContext(given, tmp_path / "r")).n_features == 9
