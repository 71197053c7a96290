"""A signal or a failing callback during a solve ends it as that signal or that exception,
never as a result (in this process; tests/hostile/test_signals.py sends real signals to real
``qpm`` processes).

Each test installs its own handler that raises :class:`Raised`, as ``qpm``'s command line
raises ``Terminated``; the solver must stop at once and the handler's exception must come out
of ``session.solve`` in place of an outcome.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest
from test_watchdog import hard_knapsack

from qpm.assignment.backends import get_backend
from qpm.assignment.backends.interrupts import Stop
from qpm.assignment.status import Termination

BACKENDS = ["highs", "scip", "gurobi"]


class Raised(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@pytest.fixture
def handlers():
    """SIGINT and SIGTERM raise Raised here, as qpm's command line raises its interrupts."""
    def raise_it(signum, _frame):
        raise Raised(signum)

    before = {s: signal.signal(s, raise_it) for s in (signal.SIGINT, signal.SIGTERM)}
    yield raise_it
    for s, h in before.items():
        signal.signal(s, h)


def session(name: str, **knapsack):
    backend = get_backend(name)
    if not backend.available()[0]:
        pytest.skip(f"{name} is not usable here")
    return backend.load(hard_knapsack(**knapsack))


def signal_soon(signum: int, after: float = 0.5) -> threading.Timer:
    timer = threading.Timer(after, os.kill, (os.getpid(), signum))
    timer.start()
    return timer


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
@pytest.mark.parametrize("name", BACKENDS)
def test_a_signal_during_a_solve_ends_it_as_the_signal(name, signum, handlers):
    # Before: HiGHS swallowed the exception into status "error" and returned its incumbent;
    # SCIP and Gurobi ran on to their time limit (SIGTERM) or caught SIGINT themselves and
    # returned "interrupted" with the incumbent.
    s = session(name)
    start = time.perf_counter()
    signal_soon(signum)
    with pytest.raises(Raised) as caught:
        s.solve(time_limit=30, threads=1)
    assert caught.value.signum == signum
    assert time.perf_counter() - start < 0.5 + 3.0  # at once, not after the 30 s
    # The handlers are back, and the session still solves.
    assert signal.getsignal(signum) is handlers
    out = s.solve(time_limit=0.3, threads=1)
    assert out.termination is Termination.TIME_LIMIT and out.x is not None


@pytest.mark.parametrize("name", BACKENDS)
def test_an_exception_in_a_progress_callback_comes_out_of_the_solve(name):
    # Before: HiGHS turned it into status "error" and returned the incumbent.
    s = session(name)

    def broken(x, objective):
        raise ZeroDivisionError("in the solution callback")

    s.on_solution = broken
    start = time.perf_counter()
    with pytest.raises(ZeroDivisionError, match="solution callback"):
        s.solve(time_limit=30, threads=1)
    assert time.perf_counter() - start < 5.0  # the solver was stopped, not run to its limit


@pytest.mark.parametrize("name", BACKENDS)
def test_an_ignored_signal_stays_ignored(name, handlers):
    before = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        s = session(name)
        signal_soon(signal.SIGTERM, 0.2)
        out = s.solve(time_limit=1.0, threads=1)
    finally:
        signal.signal(signal.SIGTERM, before)
    assert out.termination is Termination.TIME_LIMIT and out.x is not None


def test_a_stop_the_solver_made_itself_surfaces_as_sigint(handlers):
    # Gurobi (and SCIP, unless told not to) catch Ctrl-C themselves and report "interrupted";
    # when qpm asked for no stop, that can only have been a SIGINT.
    with pytest.raises(Raised) as caught:
        Stop(lambda: None).settle(interrupted=True)
    assert caught.value.signum == signal.SIGINT
    asked = Stop(lambda: None)
    asked.time_is_up()
    asked.settle(interrupted=True)  # the watchdog's own stop: a result with its incumbent
    Stop(lambda: None).settle(interrupted=False)


def test_outside_the_main_thread_a_solve_runs_as_before():
    # Python runs no signal handler there: nothing to defer, nothing installed.
    s = session("highs")
    result = {}
    worker = threading.Thread(target=lambda: result.update(out=s.solve(time_limit=0.3,
                                                                        threads=1)))
    worker.start()
    worker.join(30)
    assert result["out"].x is not None and np.isfinite(result["out"].objective)
