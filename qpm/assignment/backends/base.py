"""The small interface every solver backend implements.

A backend loads a :class:`~qpm.assignment.formulations.compile.MatrixForm` into a :class:`Session`
(the hand-off), which can then grow (``add_columns`` / ``add_rows``) and be re-solved
warm-started; that is what the iterative presets and the cut formulation rely on.
``Backend.solve(model, ...)`` is the one-shot convenience for a whole Pyomo model.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from qpm.assignment.formulations.compile import MatrixForm, ModelCompiler

# "feasible": a verified assignment from a method that proves no bound (the greedy heuristic);
# "time_limit": an exact solver stopped by its limit (with its best assignment, if any).
STATUSES = ("optimal", "feasible", "time_limit", "infeasible", "error")


@dataclass
class BackendOutcome:
    """One solve. ``x`` holds the column values (None without a feasible point)."""

    status: str
    x: np.ndarray | None = None
    objective: float | None = None
    bound: float | None = None
    handoff_seconds: float = 0.0
    solve_seconds: float = 0.0
    message: str = ""

    @property
    def has_solution(self) -> bool:
        return self.x is not None


def classify(raw, optimal, stopped, infeasible) -> str:
    """One of :data:`STATUSES` for a solver's own status code ``raw``, given which of its
    codes mean optimal, stopped early by a limit, and infeasible (anything else: error)."""
    if raw in optimal:
        return "optimal"
    if raw in stopped:
        return "time_limit"
    if raw in infeasible:
        return "infeasible"
    return "error"


def proven_bound(status: str, value: float | None, infinity: float = math.inf) -> float | None:
    """A solver's dual bound where it proves one: after an optimal or stopped solve, finite
    and below the solver's own ``infinity``."""
    if status not in ("optimal", "time_limit") or value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) and abs(value) < infinity else None


# Seconds past its own time limit after which a solver is interrupted from outside.
WATCHDOG_GRACE = 1.0


@contextlib.contextmanager
def watchdog(time_limit: float | None, interrupt: Callable[[], None]) -> Iterator[None]:
    """Run the block; if it still runs ``WATCHDOG_GRACE`` s (plus 5%) after ``time_limit``,
    call ``interrupt()`` from another thread. Solvers keep their own limits; this catches one
    that overruns them (e.g. when starting thousands of threads) so it stops and returns its
    incumbent, which is verified like any other answer."""
    if time_limit is None or not math.isfinite(time_limit):
        yield
        return
    timer = threading.Timer(float(time_limit) * 1.05 + WATCHDOG_GRACE, interrupt)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


class LicenceLimit(Exception):
    """The solver is installed but its licence does not take a model of this size."""


class Session(ABC):
    """A model held by one solver; grows by columns and rows between solves.

    A solve loop that follows progress sets ``on_bound(value)`` (called with each dual bound
    the solver proves while it runs) and ``on_solution(x, objective)`` (each improving
    solution of THIS model); backends call them from their callbacks through
    :meth:`report_bound` / :meth:`report_solution`.
    """

    #: seconds spent handing data to the solver so far (load plus every addition)
    handoff_seconds: float = 0.0
    on_bound: Callable[[float], None] | None = None
    on_solution: Callable[[np.ndarray, float], None] | None = None

    @property
    def following(self) -> bool:
        return self.on_bound is not None or self.on_solution is not None

    def report_bound(self, value) -> None:
        if self.on_bound is not None and value is not None and math.isfinite(float(value)):
            self.on_bound(float(value))

    def report_solution(self, x, objective) -> None:
        if self.on_solution is not None and x is not None:
            self.on_solution(np.asarray(x, dtype=np.float64), float(objective))

    @property
    @abstractmethod
    def n_cols(self) -> int: ...

    @abstractmethod
    def add_columns(
        self, lo: np.ndarray, hi: np.ndarray, integer: np.ndarray, c: np.ndarray | None = None
    ) -> None:
        """Append columns (bounds, integrality, objective coefficients, default 0)."""

    @abstractmethod
    def add_rows(self, A: sp.csr_array, lo: np.ndarray, hi: np.ndarray) -> None:
        """Append rows ``lo <= A @ x <= hi``; ``A`` has ``n_cols`` columns."""

    @abstractmethod
    def solve(
        self,
        time_limit: float | None = None,
        mip_gap: float = 1e-4,
        threads: int | None = None,
        start: np.ndarray | None = None,
    ) -> BackendOutcome:
        """Solve; ``start`` is a full column vector (NaN = unknown) used as a warm start."""

    def delete_rows(self, rows: np.ndarray) -> bool:
        """Remove rows (positions in this session, ascending) if the solver can; False if not.

        Only for LPs whose rows are cuts: the cut loop drops cuts that went slack, which keeps
        the warm-started re-solves small (a slack row's basis status survives the removal).
        """
        return False

    def close(self) -> None:  # noqa: B027 - optional hook
        """Free solver memory early (optional)."""

    def apply(self, delta) -> None:
        """Apply a ``Delta`` from ``ModelCompiler.update``."""
        if delta.col_lo.size:
            self.add_columns(delta.col_lo, delta.col_hi, delta.integer, delta.c)
        if delta.row_lo.size:
            self.add_rows(delta.A, delta.row_lo, delta.row_hi)


class Backend(ABC):
    """A solver. ``name`` is its registry name."""

    name: str = ""
    #: True when the backend proves bounds (greedy does not)
    exact: bool = True

    @abstractmethod
    def available(self) -> tuple[bool, str]:
        """(True, "") when usable, else (False, why and how to fix)."""

    @abstractmethod
    def version(self) -> str: ...

    def check_size(self, n_cols: int, n_rows: int) -> None:  # noqa: B027 - optional hook
        """Raise :class:`LicenceLimit` when the licence cannot take a model this size."""

    @abstractmethod
    def load(self, form: MatrixForm) -> Session:
        """Hand a matrix form to the solver."""

    def solve(
        self,
        model,
        time_limit: float | None = None,
        mip_gap: float = 1e-4,
        threads: int | None = None,
        warm_start: bool = True,
    ) -> BackendOutcome:
        """Compile, load and solve a whole Pyomo model; values are written back into it."""
        t0 = time.perf_counter()
        compiler = ModelCompiler(model)
        form = compiler.form
        self.check_size(form.n_cols, form.n_rows)
        session = self.load(form)
        outcome = session.solve(
            time_limit, mip_gap, threads, form.start if warm_start else None
        )
        outcome.handoff_seconds = time.perf_counter() - t0 - outcome.solve_seconds
        if outcome.x is not None:
            compiler.store(outcome.x)
        return outcome


@dataclass
class SolveOptions:
    """What :func:`qpm.assignment.solving.solve` passes to a formulation's solve loop.

    ``start`` is a feasible solution of the full problem (an object with ``selected``
    feature indices, an (F, C) ``matrix`` and ``objective``), or None; ``deadline`` is a
    ``time.perf_counter()`` value by which everything must be done, or None.
    """

    time_limit: float | None = None
    mip_gap: float = 1e-4
    threads: int | None = None
    warm_start: bool = True
    progress: bool = False
    start: object | None = None
    deadline: float | None = None
    trace: object | None = None  # a qpm.assignment.trace.Trace to record progress into

    def remaining(self) -> float | None:
        """Seconds left before ``deadline`` (None without a limit, never below 0)."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - time.perf_counter())
