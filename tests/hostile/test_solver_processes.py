"""Real ``python -m qpm`` processes around a solver: signals during a solve, and the worker
processes of ``qpm compare`` started from a hostile folder.

SIGTERM (``kill``, a job scheduler) and SIGINT (Ctrl-C) while a solver runs, on every backend,
in ``qpm solve``, ``qpm compare`` and ``qpm train``.

The promise (README, Reliability): exit code 143 / 130 and one line, nothing from the
interrupted solve printed or written, finished artifacts kept. Before, ``qpm solve --solver
highs`` printed the interrupted incumbent as ``status error`` and exited 0, SCIP and Gurobi
ignored SIGTERM until the solve ended and took Ctrl-C for a time limit, and ``qpm train``
fine-tuned on the interrupted assignment.

Each signal is sent once the process has logged (at -v) that its MIP solve has started, and
each test checks the process's own word that the solver was stopped by that signal, so a
signal that landed outside the solver fails the test instead of passing it. The instances
are small (Gurobi's size-limited licence takes them) but hard: uninterrupted, the ``qpm
solve`` one runs for minutes on every backend.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from qpm.assignment.backends import get_backend

REPO = Path(__file__).resolve().parents[2]
STARTED = "MIP solve started"
BACKENDS = ["highs", "scip", "gurobi"]
NAMES = {signal.SIGTERM: ("terminated", 143), signal.SIGINT: ("interrupted", 130)}
# F=55 features x C=3 classes, n=15, k=5, every pair penalised 20 times as much as by
# default: maximum-diversity selection, which branch and bound proves slowly. The full
# model has 1870 columns and 1822 rows, inside Gurobi's size-limited licence.
HARD = ["--n-features", "15", "--per-class", "5", "--redundancy-threshold", "0",
        "--redundancy-weight", "20", "--formulation", "full", "--mip-gap", "0",
        "--time-limit", "300", "--threads", "1"]


def usable(name: str) -> bool:
    return bool(get_backend(name).available()[0])


def env() -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    out.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return out


def _default_sigint() -> None:
    # A shell starts background jobs with SIGINT ignored, and children inherit it: make
    # sure the qpm process under test handles Ctrl-C as a terminal's foreground job does.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@dataclass
class Process:
    """A ``python -m qpm`` process (``python ARGV`` with ``module=None``) whose output is read
    as it comes."""

    argv: list[str]
    module: str | None = "qpm"
    cwd: Path = REPO
    group: bool = False  # its own process group, to send a signal to all of it (Ctrl-C)
    lines: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, *(["-m", self.module] if self.module else []), *self.argv],
            env=env(), cwd=self.cwd,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            preexec_fn=_default_sigint, start_new_session=self.group)
        self.out: list[str] = []
        self._readers = [threading.Thread(target=self._read, args=(s, b), daemon=True)
                         for s, b in ((self.proc.stderr, self.lines), (self.proc.stdout,
                                                                       self.out))]
        for reader in self._readers:
            reader.start()

    def _read(self, stream, into: list[str]) -> None:
        for line in stream:
            into.append(line)
            if "solver stopped by" in line:
                self.stopped = time.monotonic()
        self.closed = time.monotonic()  # the process has ended (or closed its streams)

    def count(self, words: str) -> int:
        return sum(words in line for line in list(self.lines))

    def wait_for(self, words: str, times: int = 1, timeout: float = 240.0) -> None:
        deadline = time.monotonic() + timeout
        while self.count(words) < times:
            assert self.proc.poll() is None, f"ended first:\n{''.join(self.lines)[-3000:]}"
            assert time.monotonic() < deadline, f"no {words!r}:\n{''.join(self.lines)[-3000:]}"
            time.sleep(0.05)

    def send(self, signum: int) -> None:
        self.signalled = time.monotonic()
        if self.group:
            os.killpg(self.proc.pid, signum)
        else:
            self.proc.send_signal(signum)

    def finish(self, timeout: float = 120.0) -> float:
        """Seconds from the signal to the end of the process."""
        self.proc.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(10)
        return self.closed - self.signalled

    def assert_interrupted(self, command: str, signum: int) -> None:
        how, code = NAMES[signum]
        err = "".join(self.lines)
        assert self.proc.returncode == code, err[-3000:]
        assert "Traceback" not in err, err[-3000:]
        assert err.strip().splitlines()[-1] == \
            f"qpm {command}: {how}; finished artifacts are kept.", err[-3000:]
        # The solver itself was stopped by this signal (not a stage before or after it).
        stopped = f"solver stopped by {signal.Signals(signum).name}"
        assert self.count(stopped) == 1, err[-3000:]


def start_all(processes: dict, signum_of, delay: float = 0.3) -> None:
    """Send each process its signal ``delay`` s after it logged that its MIP solve started."""
    pending = dict(processes)
    deadline = time.monotonic() + 300
    while pending:
        for key, p in list(pending.items()):
            if p.count(STARTED):
                time.sleep(delay)
                p.send(signum_of(key))
                del pending[key]
            else:
                assert p.proc.poll() is None, f"{key} ended first:\n{''.join(p.lines)[-3000:]}"
        assert time.monotonic() < deadline, {k: "".join(p.lines)[-1000:] for k, p in
                                             pending.items()}
        time.sleep(0.05)


@pytest.fixture(scope="module")
def hard_sims(tmp_path_factory) -> Path:
    from qpm.assignment.cache import save_similarities
    from qpm.assignment.similarities import compute_similarities
    from qpm.assignment.synthetic import make_bias, make_features

    X, y = make_features(55, 3, seed=0, family="lowrank")
    A, R = compute_similarities(X, y, 3)
    return save_similarities(tmp_path_factory.mktemp("hard") / "hard.npz", A, R,
                             make_bias(55, 0))


# -- qpm solve ---------------------------------------------------------------------------------
def test_solve_ends_as_the_signal_on_every_backend(hard_sims, tmp_path):
    cases = {(name, signum): Process(["solve", "-v", str(hard_sims), "--solver", name,
                                      "--no-warm-start", *HARD, "--out",
                                      str(tmp_path / f"{name}-{signum}.json")])
             for name in BACKENDS if usable(name)
             for signum in (signal.SIGTERM, signal.SIGINT)}
    if not cases:
        pytest.skip("no solver usable here")
    start_all(cases, lambda key: key[1])
    for (name, signum), p in cases.items():
        seconds = p.finish()
        p.assert_interrupted("solve", signum)
        assert "".join(p.out) == "", (name, p.out)  # no result printed
        assert not (tmp_path / f"{name}-{signum}.json").exists()  # and none written
        print(f"{name} {signal.Signals(signum).name}: solver stopped "
              f"{p.stopped - p.signalled:.1f} s and the process ended {seconds:.1f} s after "
              "the signal")
        # Uninterrupted, each of these runs for minutes. The process's exit after the solver
        # stopped (its interpreter's teardown) is as slow as the machine is loaded.
        assert p.stopped - p.signalled < 10 and seconds < 60, (name, signum, seconds)


LIBRARY = """
import logging, sys
from qpm.assignment.cache import load_similarities
from qpm.assignment.solving import solve
logging.basicConfig(level=logging.DEBUG)
problem = load_similarities(sys.argv[1]).problem(n_features=15, per_class=5, tau=0.0,
                                                 redundancy_weight=20.0)
solve(problem, solver=sys.argv[2], formulation="full", mip_gap=0.0, threads=1,
      warm_start=False, time_limit=300)
print("returned a result")
"""


def test_as_a_library_an_unhandled_sigterm_still_ends_the_process(hard_sims):
    # qpm's deferring handler stands in only while the solver runs, then hands the signal to
    # the one that was there: here none, so SIGTERM ends the process as it would have.
    cases = {name: Process(["-c", LIBRARY, str(hard_sims), name], module=None)
             for name in BACKENDS if usable(name)}
    if not cases:
        pytest.skip("no solver usable here")
    start_all(cases, lambda _name: signal.SIGTERM)
    for name, p in cases.items():
        p.finish()
        assert p.proc.returncode == -signal.SIGTERM, (name, "".join(p.lines)[-3000:])
        assert p.count("solver stopped by SIGTERM") == 1 and p.out == [], name


# -- qpm compare -------------------------------------------------------------------------------
def _solvers_alive(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.append(pid)
    return alive


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("signum, group", [(signal.SIGINT, True), (signal.SIGTERM, False)],
                         ids=["ctrl-c to the group", "kill to qpm"])
def test_compare_ends_as_the_signal_and_stops_every_run(hard_sims, signum, group):
    # Ctrl-C reaches every process of the terminal's group: the runs must leave the answer to
    # qpm compare (before, each printed a KeyboardInterrupt traceback of its own).
    solvers = [name for name in BACKENDS if usable(name)]
    p = Process(["compare", "-v", str(hard_sims), "--solvers", ",".join(solvers), "--jobs",
                 str(len(solvers)), *HARD], group=group)
    p.wait_for(STARTED, times=len(solvers))
    pids = [int(line.rsplit(" ", 1)[1]) for line in p.lines if "solving in process" in line]
    assert len(pids) == len(solvers) and _solvers_alive(pids) == pids
    time.sleep(0.3)
    p.send(signum)
    seconds = p.finish()
    how, code = NAMES[signum]
    err = "".join(p.lines)
    assert p.proc.returncode == code, err[-3000:]
    assert "Traceback" not in err and err.strip().splitlines()[-1] == \
        f"qpm compare: {how}; finished artifacts are kept.", err[-3000:]
    assert "".join(p.out).count("\n") == 3  # the header only: no table of interrupted runs
    deadline = time.monotonic() + 15
    while _solvers_alive(pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _solvers_alive(pids) == []
    assert seconds < 60


# -- qpm train ---------------------------------------------------------------------------------
DIGITS = ["--dataset", "digits", "--image-size", "8", "--epochs", "1", "--ft-epochs", "1",
          "--device", "cpu"]
# The full model on the digits run's similarities (128 features x 10 classes), slow for HiGHS
# and SCIP; Gurobi's size-limited licence takes only smaller models, which it solves in about
# 4 s (n=40, k=12, gap 0): its signal lands 0.3 s into that.
TRAIN_HARD = {
    "highs": ["--preset", "qpm-full", "--n-features", "20", "--per-class", "5"],
    "scip": ["--preset", "qpm-full", "--n-features", "20", "--per-class", "5"],
    "gurobi": ["--preset", "qpm-full", "--n-features", "40", "--per-class", "12",
               "--mip-gap", "0"],
}
TRAIN_SIGNAL = {"highs": signal.SIGTERM, "scip": signal.SIGINT, "gurobi": signal.SIGTERM}


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    """A finished digits run (greedy assignment): dense model, features, similarities."""
    import torch

    from qpm.cli import main

    run_dir = tmp_path_factory.mktemp("digits") / "run"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["train", *DIGITS, "--solver", "greedy", "--n-features", "12",
                     "--per-class", "2", "--run-dir", str(run_dir)]) == 0
    finally:
        torch.set_num_threads(before)
    return run_dir


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"}


def test_train_ends_as_the_signal_without_fine_tuning_on_every_backend(digits_run,
                                                                       tmp_path):
    # Each backend trains a new variant of its own copy of the run: the dense model, features
    # and similarities are reused, so the assignment stage starts at once.
    cases = {}
    for name in BACKENDS:
        if not usable(name):
            continue
        run_dir = tmp_path / name
        shutil.copytree(digits_run, run_dir)
        cases[name] = (Process(["train", "-v", *DIGITS, "--solver", name, *TRAIN_HARD[name],
                                "--time-limit", "300", "--run-dir", str(run_dir)]),
                       run_dir, _hashes(run_dir))
    if not cases:
        pytest.skip("no solver usable here")
    start_all({k: p for k, (p, _, _) in cases.items()}, TRAIN_SIGNAL.get)
    for name, (p, run_dir, before) in cases.items():
        p.finish()
        p.assert_interrupted("train", TRAIN_SIGNAL[name])
        after = _hashes(run_dir)
        # Every finished artifact is kept; config.json at the top records the latest train.
        assert {k: v for k, v in after.items() if k in before and k != "config.json"} == \
            {k: v for k, v in before.items() if k != "config.json"}
        new = sorted(set(after) - set(before))
        # The new variant holds its config only: no assignment, no stage record, no model.
        assert len(new) == 1 and new[0].endswith("config.json"), (name, new)
        assert "[qpm]" not in "".join(p.lines), name  # no fine-tuning began


# -- qpm compare's workers import qpm, not the current folder's qpm/ ---------------------------
@pytest.mark.parametrize("hostile", [False, True], ids=["empty qpm/", "hostile qpm/"])
def test_compare_from_a_folder_holding_a_qpm_package(hard_sims, tmp_path, hostile):
    # Started as the `qpm` console script is (its own folder first on sys.path, not the
    # current one), from a folder with a qpm/ package of its own. The fork server of the
    # worker processes is started with `python -c`, which put the current folder first on its
    # path: the greedy row failed ("module 'qpm' has no attribute '__version__'"), and a qpm/
    # that exits on import took the fork server down (an EOFError traceback, exit code 1).
    here = tmp_path / "work"
    (here / "qpm" / "assignment").mkdir(parents=True)
    (here / "qpm" / "__init__.py").write_text("")
    if hostile:
        (here / "qpm" / "assignment" / "__init__.py").write_text("raise SystemExit(3)\n")
    before = sorted(p.name for p in here.rglob("*"))
    script = tmp_path / "bin" / "qpm"
    script.parent.mkdir()
    script.write_text("import sys\nfrom qpm.cli import main\n\n"
                      "if __name__ == '__main__':\n    sys.exit(main())\n")
    proc = subprocess.run([sys.executable, str(script), "compare", str(hard_sims), "--solvers",
                           "greedy", "--time-limit", "5"], env=env(), cwd=here,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    row = next(line for line in proc.stdout.splitlines() if line.startswith("greedy "))
    assert row.split()[2] == "feasible" and " yes " in row, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    assert sorted(p.name for p in here.rglob("*")) == before  # nothing written there
