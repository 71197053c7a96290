"""Every exact backend honours the time limit even when the solver itself overruns it, and
absurd thread counts are capped at the CPU count."""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest
import scipy.sparse as sp

from qpm.assignment.backends import get_backend
from qpm.assignment.backends.base import WATCHDOG_GRACE, MatrixForm
from qpm.assignment.solving import cap_threads, cpu_count, solve
from qpm.assignment.synthetic import make_instance


def hard_knapsack(n: int = 50, m: int = 4) -> MatrixForm:
    """A multi-dimensional knapsack: feasible points are easy, proving optimality is not."""
    rng = np.random.default_rng(1)
    A = rng.integers(0, 100, size=(m, n)).astype(float)
    c = A.sum(0) + rng.integers(0, 3, size=n)
    return MatrixForm(c=c, c0=0.0, maximize=True, A=sp.csr_array(A),
                      row_lo=np.full(m, -np.inf), row_hi=np.floor(A.sum(1) / 2),
                      col_lo=np.zeros(n), col_hi=np.ones(n), integer=np.ones(n, bool),
                      columns=[None] * n, start=np.full(n, np.nan))


@pytest.mark.parametrize("name", ["highs", "scip", "gurobi"])
def test_a_solver_that_ignores_its_limit_is_stopped_with_its_incumbent(name, monkeypatch):
    backend = get_backend(name)
    if not backend.available()[0]:
        pytest.skip(f"{name} is not usable here")
    form = hard_knapsack()
    session = backend.load(form)
    # The solver is told no limit at all, as if it ignored the one it was given.
    monkeypatch.setattr(session, "_set_limit", lambda _limit: type(session)._set_limit(
        session, None))
    start = time.perf_counter()
    out = session.solve(time_limit=0.3, threads=1)
    seconds = time.perf_counter() - start
    assert 0.3 * 1.05 + WATCHDOG_GRACE - 0.1 < seconds < 0.3 * 1.05 + WATCHDOG_GRACE + 1.5
    assert out.termination.stopped_early and out.x is not None  # stopped, not failed
    assert np.all(form.A @ out.x <= form.row_hi + 1e-6)  # the incumbent is feasible
    # Later solves of the same session are neither interrupted at once nor given more time:
    # each honours its own limit (HiGHS once added the session's past run time to it).
    monkeypatch.undo()
    for _ in range(3):
        again = session.solve(time_limit=0.2, threads=1)
        assert again.x is not None and 0.15 <= again.solve_seconds < 0.2 + 0.5


def test_threads_are_capped_at_the_cpu_count_with_one_line(caplog):
    with caplog.at_level(logging.WARNING, logger="qpm"):
        assert cap_threads(100_000) == cpu_count()
    assert len(caplog.records) == 1 and "using" in caplog.records[0].getMessage()
    assert cap_threads(None) is None and cap_threads(1) == 1


def test_solve_with_100000_threads_keeps_its_time_limit():
    problem = make_instance("tiny", seed=0)
    start = time.perf_counter()
    result = solve(problem, solver="highs", time_limit=5, threads=100_000)
    assert time.perf_counter() - start < 5 * 1.05 + WATCHDOG_GRACE + 2
    assert result.verified
