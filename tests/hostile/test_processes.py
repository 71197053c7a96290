"""Hostile input through real ``python -m qpm`` processes: two writers on one run folder, and
a few bad inputs whose exit code and stderr are those a shell sees."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_RUN_FLAGS, consistent

REPO = Path(__file__).resolve().parents[2]
DIGITS = ["train", "--dataset", "digits", "--image-size", "8", "--n-features", "12",
          "--per-class", "2", "--solver", "greedy", "--time-limit", "3", "--device", "cpu",
          "--ft-epochs", "1"]


def env() -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    out.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return out


def qpm(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "qpm", *args], env=env(), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def startup_seconds() -> float:
    """What starting Python and importing the command line costs here before any qpm work."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import qpm.cli, qpm.commands.train, "
                    "qpm.run_folder"], env=env(), check=True)
    return time.perf_counter() - t0


def test_of_two_writers_one_is_refused_at_once_and_the_other_finishes(tmp_path,
                                                                       tiny_imagefolder):
    # Both start together on an existing folder: whichever takes the lock first trains, the
    # other must be refused before it loads anything.
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    baseline = startup_seconds()
    argv = ["train", *TINY_RUN_FLAGS, "--data-root", str(tiny_imagefolder), "--run-dir",
            str(run_dir)]
    procs = {seed: (qpm(*argv, "--seed", seed), time.perf_counter()) for seed in ("0", "1")}
    ended: dict[str, float] = {}
    while len(ended) < len(procs):  # each process's own run time
        for seed, (proc, t0) in procs.items():
            if seed not in ended and proc.poll() is not None:
                ended[seed] = time.perf_counter() - t0
        time.sleep(0.01)
    results = {seed: (proc, proc.communicate(timeout=60)[1], ended[seed])
               for seed, (proc, _) in procs.items()}
    done = [s for s, (p, _, _) in results.items() if p.returncode == 0]
    refused = [s for s, (p, _, _) in results.items() if p.returncode == 2]
    assert len(done) == 1 and len(refused) == 1, {s: r[1][-500:] for s, r in results.items()}
    winner, (_, err, seconds) = results[done[0]][0], results[refused[0]]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and f"is in use by pid {winner.pid}" in lines[0], err
    print(f"second writer refused after {seconds:.2f} s (Python start-up here: "
          f"{baseline:.2f} s)")
    assert seconds - baseline < 1.0  # refused at once, not after loading data or training
    assert consistent(run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    assert str(config["seed"]) == done[0]  # nothing of the refused writer's settings got in


def one_error_line(proc: subprocess.Popen, command: str) -> str:
    out, err = proc.communicate(timeout=300)
    lines = err.strip().splitlines()
    assert proc.returncode == 2, err
    assert "Traceback" not in err and len(lines) == 1, err
    assert lines[0].startswith(f"qpm {command}: error:"), lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("bad")
    np.savez(folder / "nan.npz", A=np.full((6, 3), np.nan), format_version=1)
    np.savez(folder / "labels.npz", features=np.ones((4, 3)), labels=np.array([0, 1, 0, 10**12]))
    return folder


def test_bad_files_in_real_processes(bad_files, tmp_path):
    procs = {
        "solve-nan": (qpm("solve", str(bad_files / "nan.npz"), "--solver", "greedy"), "solve",
                      "NaN"),
        "similarities-labels": (qpm("similarities", str(bad_files / "labels.npz"), "-o",
                                    str(tmp_path / "o.npz")), "similarities", "go up to"),
        "train-beta-nan": (qpm(*DIGITS, "--beta", "nan", "--run-dir", str(tmp_path / "r")),
                           "train", "--beta must be a finite number"),
        "evaluate-device": (qpm("evaluate", str(tmp_path), "--device", "bogus"), "evaluate",
                            "Unknown device"),
    }
    for name, (proc, command, words) in procs.items():
        assert words in one_error_line(proc, command), name
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written anywhere


def _marked(mark: str) -> list[int]:
    """The pids of live processes whose environment holds ``mark`` (a process and its
    children, including those a fork server started)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and mark.encode() in (proc / "environ").read_bytes():
                state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    pids.append(int(proc.name))
        except OSError:
            continue
    return pids


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc")
def test_sigterm_stops_compare_and_its_solver_processes(tmp_path):
    # A scheduler's `kill` must not leave solver processes running on after qpm compare.
    from qpm.assignment.cache import save_similarities
    from qpm.assignment.synthetic import make_instance

    p = make_instance("medium", seed=0)  # about 20 s of HiGHS: still running when killed
    save_similarities(tmp_path / "sims.npz", p.A, p.R, p.b)
    mark = f"QPM_TEST_MARK_{os.getpid()}_{time.time_ns()}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "qpm", "compare", str(tmp_path / "sims.npz"), "--solvers",
         "highs,scip", "--jobs", "2", "--time-limit", "120"], env={**env(), mark: "1"},
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while len(_marked(mark)) < 4 and time.monotonic() < deadline:  # qpm, server, 2 solvers
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    assert len(_marked(mark)) >= 4
    time.sleep(1.0)
    proc.terminate()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].endswith(
        "terminated; finished artifacts are kept."), err
    deadline = time.monotonic() + 15
    while _marked(mark) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _marked(mark) == []
