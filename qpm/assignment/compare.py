"""Solver comparison: the same problem through several solvers, each in its own process.

:func:`compare` runs every (solver, formulation) pair through :func:`qpm.assignment.solve`
(so through the verifier) in a fresh process (forked from a clean ``forkserver`` that has
imported the solve stack once) with the time limit and an
address-space limit. A solver that crashes, hangs past the limit plus a grace period, runs
out of memory or is not installed gets a row that says so; the others still run. Each row
carries the incumbent/bound trace of its solve (:mod:`qpm.assignment.trace`), which
:mod:`qpm.assignment.compare_report` turns into compare.json, compare.csv and compare.png.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass, field

from qpm.assignment.backends import (
    HEURISTICS,
    backend_factory,
    check_solver,
    get_backend,
    register_backend,
)
from qpm.assignment.limits import DEFAULT_GRACE
from qpm.assignment.problem import AssignmentProblem
from qpm.assignment.trace import INCUMBENT
from qpm.errors import QPMError

log = logging.getLogger("qpm.compare")

# Statuses a row can have besides the solver statuses (optimal, feasible, time_limit, ...).
MISSING, CRASHED, KILLED, OUT_OF_MEMORY, FAILED = (
    "missing", "crashed", "killed", "out_of_memory", "failed")
# A run of an independent bound (qpm.assignment.bounds) instead of a solver: its
# "formulation" is this word and its row has a bound and no answer.
BOUND_RUN = "bound"


@dataclass
class Limits:
    """What every run gets: ``memory_gb`` caps each run's address space (None: no cap);
    ``hard_timeout`` (seconds) kills a run that has not answered by then (default: time
    limit plus ``grace``, or no kill without a time limit)."""

    time_limit: float | None = None
    mip_gap: float = 1e-4
    threads: int | None = None
    memory_gb: float | None = None
    grace: float = DEFAULT_GRACE
    hard_timeout: float | None = None

    def kill_after(self) -> float | None:
        if self.hard_timeout is not None:
            return self.hard_timeout
        return None if self.time_limit is None else self.time_limit + self.grace


@dataclass
class Row:
    """One run. ``ran`` is the solver that actually ran (another one after a fallback);
    times are seconds from the start of the solve; ``trace`` as in :class:`Trace`."""

    asked: str
    formulation: str
    status: str
    ran: str | None = None
    repeat: int = 1
    objective: float | None = None
    bound: float | None = None
    gap: float | None = None
    first_answer: float | None = None
    final_answer: float | None = None
    build_handoff: float | None = None
    wall: float | None = None
    peak_mb: float | None = None
    verified: bool = False
    fallback: bool = False
    note: str = ""
    trace: list = field(default_factory=list)

    @property
    def label(self) -> str:
        ran = self.ran or self.asked
        why = " (licence)" if self.fallback else ""
        name = self.asked if ran == self.asked else f"{self.asked} -> {ran}{why}"
        return name if self.repeat == 1 else f"{name} #{self.repeat}"

    def to_dict(self) -> dict:
        return {**asdict(self), "label": self.label}


@dataclass
class Comparison:
    """All rows plus the best objective and the best (lowest) proven bound among them."""

    rows: list[Row]
    header: dict = field(default_factory=dict)

    @property
    def best_objective(self) -> float | None:
        values = [r.objective for r in self.rows if r.verified and r.objective is not None]
        return max(values) if values else None

    @property
    def best_bound(self) -> float | None:
        values = [r.bound for r in self.rows if r.bound is not None and math.isfinite(r.bound)]
        return min(values) if values else None

    @property
    def best_bound_by(self) -> str | None:
        """The label of the run that proved :attr:`best_bound` (the certificate's source)."""
        best = self.best_bound
        for r in self.rows:
            if best is not None and r.bound is not None and r.bound <= best:
                return r.label
        return None

    def to_bound(self, row: Row) -> float | None:
        """Relative distance of ``row``'s answer below the best bound any run proved."""
        best = self.best_bound
        if best is None or row.objective is None or not row.verified:
            return None
        return max(0.0, best - row.objective) / max(abs(row.objective), 1e-10)


# -- one run, in its own process ------------------------------------------------------------
def _child(conn, problem: AssignmentProblem, solver: str, factory, formulation: str,
           limits: Limits, log_level: int = logging.WARNING) -> None:
    """Runs in the child process: solve, then send the row as a dict through ``conn``."""
    import resource

    _log_to_stderr(log_level, _label(solver, formulation))
    if limits.memory_gb:
        cap = int(limits.memory_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    _end_with_parent()
    if factory is not None and backend_factory(solver) is None:  # registered in the parent
        register_backend(solver, factory)
    _send(conn, "started")  # the parent's clock for the time limit and grace starts now
    row = Row(asked=solver, formulation=formulation, status=FAILED)
    try:
        run = _bound_row if formulation == BOUND_RUN else _solve_row
        row = run(problem, solver, formulation, limits)
    except MemoryError:
        row.status, row.note = OUT_OF_MEMORY, f"over the memory limit ({limits.memory_gb} GB)"
    except QPMError as exc:
        row.note = str(exc)
    except Exception as exc:  # a crashing backend is a finding, not the end of the comparison
        row.note = f"{type(exc).__name__}: {exc}"
    row.peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    _send(conn, row.to_dict())
    conn.close()


def _label(solver: str, formulation: str) -> str:
    return solver if solver in HEURISTICS else f"{solver} {formulation}"


def _log_to_stderr(level: int, label: str) -> None:
    """A run's messages go to stderr at its parent's level, each naming the run (at -v its
    solver's progress, e.g. when its MIP solve starts)."""
    handler = logging.StreamHandler(sys.stderr)
    fmt = "%(levelname)s %(name)s" if level <= logging.DEBUG else ""
    handler.setFormatter(logging.Formatter(f"{fmt} [{label}]: %(message)s".lstrip()))
    logger = logging.getLogger("qpm")
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False


def _send(conn, message) -> None:
    """Send to the parent; if it is gone (interrupted, killed), end quietly."""
    try:
        conn.send(message)
    except OSError:  # BrokenPipeError and its kin: nobody is waiting for this row
        os._exit(1)


def _end_with_parent() -> None:
    """Run's side of "no solver outlives qpm compare": a thread that ends this process once
    the parent's end of the start-up pipe closes (its exit, however it ended, even kill -9).
    The parent kills its runs when interrupted, but a run whose start was interrupted has no
    pid on the parent's side, and a killed parent kills nothing."""
    import multiprocessing
    import threading

    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        parent.join()
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="qpm-run-parent").start()


def _solve_row(problem, solver: str, formulation: str, limits: Limits) -> Row:
    from qpm.assignment.solving import FALLBACKS, resolve_formulation, solve
    from qpm.assignment.status import Availability
    from qpm.assignment.trace import Trace

    row = Row(asked=solver, formulation=formulation, status=FAILED)
    form = resolve_formulation(formulation, problem, solver)
    if form != "greedy":
        state, why = get_backend(solver).available()
        if not Availability.of(state) and solver not in FALLBACKS:  # else a fallback says so
            row.status, row.note = MISSING, why
            return row
    trace = Trace()
    result = solve(problem, solver=solver, time_limit=limits.time_limit, mip_gap=limits.mip_gap,
                   threads=limits.threads, formulation=formulation, trace=trace)
    t = result.times
    row.formulation = "-" if form == "greedy" else form
    row.status, row.ran, row.verified = result.status, result.solver, result.verified
    row.objective, row.bound, row.gap = result.objective, result.bound, result.gap
    row.fallback = result.fallback is not None
    row.first_answer = trace.first(INCUMBENT)
    row.final_answer = trace.now()
    row.build_handoff = t.build + t.handoff
    row.note = result.fallback or result.message
    row.trace = trace.to_list()
    return row


def _bound_row(problem, method: str, formulation: str, limits: Limits) -> Row:
    """An independent upper bound (``method`` of :mod:`qpm.assignment.bounds`) as a row."""
    from qpm.assignment.bounds import upper_bound

    found = upper_bound(problem, method, time_limit=limits.time_limit, threads=limits.threads)
    return Row(asked=f"bound:{found.method}", formulation="-", status=BOUND_RUN, bound=found.value,
               final_answer=found.seconds, note=found.detail)


# Imported once by the fork server, so every run starts at once.
PRELOAD = ["numpy", "scipy.sparse", "qpm.assignment.compare", "qpm.assignment.solving",
           "qpm.assignment.formulations.cuts.loop", "qpm.assignment.formulations.full"]
# Python 3.10 cannot start the server without the current folder first on its sys.path.
SAFE_PRELOAD = sys.version_info >= (3, 11)


def start_fork_server(ctx) -> None:
    """Start the fork server every run is forked from (once per process), isolated:

    * it imports only from where this process does: Python starts it with ``-c``, which puts
      the current folder first on its ``sys.path`` (3.11 ignores the ``sys_path`` that
      multiprocessing hands it), so a folder holding a ``qpm/`` directory was imported instead
      of the package and every run failed. It starts under ``PYTHONSAFEPATH`` (``-P``); on
      3.10, which lacks it, it preloads nothing and each run imports what it needs after
      taking this process's ``sys.path``.
    * SIGINT is blocked in it and in every run it forks: Ctrl-C reaches the whole process
      group, and this process alone decides (it stops every run). A run's solver would
      otherwise stop on its own and print a traceback or a line of its own.
    """
    from multiprocessing import forkserver, resource_tracker

    ctx.set_forkserver_preload(PRELOAD if SAFE_PRELOAD else [])
    # The fork server starts the resource tracker first, which UNBLOCKS SIGINT afterwards
    # (SIG_UNBLOCK, not the previous mask): start the tracker before blocking.
    resource_tracker.ensure_running()
    saved = os.environ.get("PYTHONSAFEPATH")
    os.environ["PYTHONSAFEPATH"] = "1"
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})  # inherited; not lost
    try:
        forkserver.ensure_running()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        if saved is None:
            del os.environ["PYTHONSAFEPATH"]
        else:
            os.environ["PYTHONSAFEPATH"] = saved


# A run has this long to start (import numpy, the solver, ...) before its clock starts.
STARTUP_TIMEOUT = 300.0


class _Run:
    """One child process: its pipe, and when its solve started (the child says so)."""

    def __init__(self, ctx, problem, solver: str, formulation: str, limits: Limits) -> None:
        self.solver, self.formulation = solver, formulation
        self.receiver, sender = ctx.Pipe(duplex=False)
        level = logging.getLogger("qpm").getEffectiveLevel()
        self.proc = ctx.Process(target=_child, args=(sender, problem, solver,
                                                     backend_factory(solver), formulation,
                                                     limits, level), daemon=True)
        self.launched = time.perf_counter()
        self.started: float | None = None  # when the child began to solve
        self.proc.start()
        sender.close()

    def _message(self):
        try:
            return self.receiver.recv() if self.receiver.poll() else None
        except (EOFError, OSError):
            return None

    def poll(self, kill_after: float | None) -> Row | None:
        """The run's row once it is over (or killed for hanging), else None."""
        data = self._message()
        if data == "started":
            self.started = time.perf_counter()
            log.debug(f"{_label(self.solver, self.formulation)}: solving in process "
                      f"{self.proc.pid}")
            data = self._message()
        now = time.perf_counter()
        wall = now - (self.started or self.launched)
        if isinstance(data, dict):
            data.pop("label", None)
            self.proc.join(timeout=10)
            return Row(**{**data, "wall": wall})
        if self.proc.is_alive():
            if self.started is None:
                if now - self.launched < STARTUP_TIMEOUT:
                    return None
            elif kill_after is None or wall < kill_after:
                return None
            self.kill()
            why = (f"killed after {wall:.0f} s: no answer by the time limit plus the grace "
                   "period" if self.started else f"did not start in {STARTUP_TIMEOUT:.0f} s")
            return Row(asked=self.solver, formulation=self.formulation, status=KILLED,
                       note=why, wall=wall)
        code = self.proc.exitcode
        how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        return Row(asked=self.solver, formulation=self.formulation, status=CRASHED, wall=wall,
                   note=f"the solver process died ({how}) without an answer")

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(timeout=10)


def compare(problem: AssignmentProblem, runs: list[tuple[str, str]], limits: Limits,
            repeat: int = 1, jobs: int = 1, on_row=None, bounds: tuple[str, ...] = ()
            ) -> Comparison:
    """Run each (solver, formulation) of ``runs`` ``repeat`` times, ``jobs`` at a time, each
    in its own process; ``on_row(row)`` is called as each run ends. Rows keep ``runs``'
    order; each method of ``bounds`` (:mod:`qpm.assignment.bounds`) adds one row with an
    independent upper bound, computed once, in its own process, with the same limits. Unknown
    solver or bound names raise a QPMError before anything runs."""
    import multiprocessing as mp

    from qpm.assignment.bounds import check_supported

    for solver, _ in runs:
        check_solver(solver)  # an unknown name is bad input, not a row
    for method in bounds:
        check_supported(method, problem)
    # Each run is forked from a clean server process that has imported the solve stack once:
    # no solver threads or locks inherited from this process, and no per-run import cost.
    ctx = mp.get_context("forkserver")
    start_fork_server(ctx)
    queue = [(i, rep, s, f) for rep in range(1, repeat + 1) for i, (s, f) in enumerate(runs)]
    queue += [(len(runs) + i, 1, m, BOUND_RUN) for i, m in enumerate(bounds)]
    order = {(i, rep): n for n, (i, rep, _, _) in enumerate(queue)}
    running: dict[tuple[int, int], _Run] = {}
    done: dict[int, Row] = {}
    kill_after = limits.kill_after()
    try:
        while queue or running:
            while queue and len(running) < max(1, jobs):
                i, rep, solver, form = queue.pop(0)
                running[i, rep] = _Run(ctx, problem, solver, form, limits)
            time.sleep(0.05)
            for key, run in list(running.items()):
                row = run.poll(kill_after)
                if row is None:
                    continue
                row.repeat = key[1]
                del running[key]
                done[order[key]] = row
                if on_row is not None:
                    on_row(row)
    finally:
        for run in running.values():  # interrupted: leave no solver behind
            run.kill()
    return Comparison([done[n] for n in sorted(done)])
