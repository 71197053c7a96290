"""The one contract every solver backend implements (numpy and scipy only: no Pyomo here).

A :class:`Backend` says whether it can run here (:meth:`Backend.available`, an
:class:`~qpm.assignment.status.Availability`) and loads a :class:`MatrixForm` into a
:class:`Session` (the hand-off). A session grows by columns and rows and is re-solved
warm-started, which the lazy preset and the cut formulation rely on; each solve returns an
:class:`Outcome`: why it stopped (a :class:`~qpm.assignment.status.Termination`) and the point,
if any. A model over a limited licence is handed a :class:`RefusedSession`, whose solves say
``licence_limit``: the solve facade decides what happens then (its fallback policy).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import math
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from qpm.assignment.backends.interrupts import Stop, deferred_signals
from qpm.assignment.status import Availability, SolutionStatus, Termination

log = logging.getLogger("qpm.solve.backend")


@dataclass
class MatrixForm:
    """``max/min c @ x + c0`` s.t. ``row_lo <= A @ x <= row_hi``, ``col_lo <= x <= col_hi``.

    ``integer[j]`` marks integer columns, ``columns[j]`` is the model variable of column j (for
    writing solutions back; backends never read it) and ``start[j]`` its current value (NaN
    when it has none), used as a warm start.
    """

    c: np.ndarray
    c0: float
    maximize: bool
    A: sp.csr_array
    row_lo: np.ndarray
    row_hi: np.ndarray
    col_lo: np.ndarray
    col_hi: np.ndarray
    integer: np.ndarray
    columns: list = field(repr=False)
    start: np.ndarray = field(repr=False)

    @property
    def n_cols(self) -> int:
        return int(self.c.size)

    @property
    def n_rows(self) -> int:
        return int(self.row_lo.size)


@dataclass
class Outcome:
    """One solve of a session. ``x`` holds the column values (None without a feasible point);
    ``bound`` is the dual bound the solver proved (None where it proved none)."""

    termination: Termination
    x: np.ndarray | None = None
    objective: float | None = None
    bound: float | None = None
    solve_seconds: float = 0.0
    message: str = ""

    @property
    def solution(self) -> SolutionStatus:
        """What ``x`` is: optimal for this session's model, feasible, or none."""
        if self.x is None:
            return SolutionStatus.NONE
        if self.termination is Termination.OPTIMAL:
            return SolutionStatus.OPTIMAL
        return SolutionStatus.FEASIBLE


def proven_bound(termination: Termination, value: float | None,
                 infinity: float = math.inf) -> float | None:
    """A solver's dual bound where it proves one: after an optimal solve or one stopped by a
    limit, finite and below the solver's own ``infinity``."""
    if not (termination is Termination.OPTIMAL or termination.stopped_early) or value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) and abs(value) < infinity else None


def installed(module: str) -> tuple[Availability, str]:
    """Whether a solver's Python package imports: ``available`` when it does, else
    ``not_installed`` with the pip line that fixes it (the package is named as its module)."""
    try:
        importlib.import_module(module)
    except ImportError:
        return Availability.NOT_INSTALLED, f"{module} is not installed; pip install {module}."
    return Availability.AVAILABLE, ""


# Seconds past its own time limit after which a solver is interrupted from outside.
WATCHDOG_GRACE = 1.0


@contextlib.contextmanager
def watchdog(time_limit: float | None, interrupt: Callable[[], None]) -> Iterator[Stop]:
    """Run one solve (the block) under the machinery that stops it from outside; yields the
    solve's :class:`~qpm.assignment.backends.interrupts.Stop`.

    If the block still runs ``WATCHDOG_GRACE`` s (plus 5%) after ``time_limit``, ``interrupt()``
    is called from another thread: solvers keep their own limits, this catches one that
    overruns them (e.g. when starting thousands of threads), and its incumbent is verified like
    any other answer. A SIGINT or SIGTERM while the block runs also calls ``interrupt()``, at
    once, and is raised again when the solver has returned (:mod:`.interrupts`): an
    interrupted solve ends as the interrupt, never as a result.
    """
    stop = Stop(interrupt)
    timer = None
    if time_limit is not None and math.isfinite(time_limit):
        timer = threading.Timer(float(time_limit) * 1.05 + WATCHDOG_GRACE, stop.time_is_up)
        timer.daemon = True
        timer.start()
    try:
        with deferred_signals(stop):
            yield stop
    finally:
        if timer is not None:
            timer.cancel()
    if stop.failure is not None:
        raise stop.failure


class Session(ABC):
    """A model held by one solver; grows by columns and rows between solves.

    A solve loop that follows progress sets ``on_bound(value)`` (called with each dual bound
    the solver proves while it runs) and ``on_solution(x, objective)`` (each improving
    solution of THIS model); backends call them from their callbacks through
    :meth:`report_bound` / :meth:`report_solution`.
    """

    on_bound: Callable[[float], None] | None = None
    on_solution: Callable[[np.ndarray, float], None] | None = None
    _stop: Stop | None = None  # the running solve's, inside :meth:`running`

    @property
    def following(self) -> bool:
        return self.on_bound is not None or self.on_solution is not None

    @contextlib.contextmanager
    def running(self, time_limit: float | None, interrupt: Callable[[], None],
                mip: str | None = None) -> Iterator[Stop]:
        """The solver's own run inside: :func:`watchdog`, and callbacks guarded by it.
        ``mip`` (the solver's name, for a model with integer columns) says at -vv that a
        MIP solve, the long kind, has started."""
        if mip:
            limit = "no time limit" if time_limit is None else f"time limit {time_limit:.3g} s"
            log.debug(f"{mip}: MIP solve started ({self.n_cols} columns, {limit})")
        with watchdog(time_limit, interrupt) as stop:
            self._stop = stop
            try:
                yield stop
            finally:
                self._stop = None

    def callback_failed(self, exc: BaseException) -> None:
        """A callback's body raised ``exc``: stop the solver and raise it once the solver has
        returned, instead of letting the solver's wrapper swallow it into a status (HiGHS
        reports ``error``). Outside a run it is raised at once."""
        if self._stop is None:
            raise exc
        self._stop.fail(exc)

    def report_bound(self, value) -> None:
        if self.on_bound is not None and value is not None and math.isfinite(float(value)):
            try:
                self.on_bound(float(value))
            except BaseException as exc:  # noqa: BLE001 - raised after the solve
                self.callback_failed(exc)

    def report_solution(self, x, objective) -> None:
        if self.on_solution is not None and x is not None:
            try:
                self.on_solution(np.asarray(x, dtype=np.float64), float(objective))
            except BaseException as exc:  # noqa: BLE001 - raised after the solve
                self.callback_failed(exc)

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
    ) -> Outcome:
        """Solve; ``start`` is a full column vector (NaN = unknown) used as a warm start."""

    def delete_rows(self, rows: np.ndarray) -> bool:
        """Remove rows (positions in this session, ascending) if the solver can; False if not.

        Only for LPs whose rows are cuts: the cut loop drops cuts that went slack, which keeps
        the warm-started re-solves small (a slack row's basis status survives the removal).
        """
        return False

    def close(self) -> None:  # noqa: B027 - optional hook
        """Free solver memory early (optional)."""


class RefusedSession(Session):
    """What a backend hands back for a model its licence does not take: nothing is loaded,
    additions are only counted, and every solve ends with ``licence_limit`` and ``why``."""

    def __init__(self, form: MatrixForm, why: str) -> None:
        self._n, self.why = form.n_cols, why

    @property
    def n_cols(self) -> int:
        return self._n

    def add_columns(self, lo, hi, integer, c=None) -> None:
        self._n += len(lo)

    def add_rows(self, A, lo, hi) -> None:
        pass

    def solve(self, time_limit=None, mip_gap=1e-4, threads=None, start=None) -> Outcome:
        return Outcome(Termination.LICENCE_LIMIT, message=self.why)


class Backend(ABC):
    """A solver. ``name`` is its registry name (:mod:`qpm.assignment.backends`)."""

    name: str = ""

    @abstractmethod
    def available(self) -> tuple[Availability, str]:
        """Whether it runs here and, unless fully available, why not and how to fix it."""

    @abstractmethod
    def version(self) -> str: ...

    def size_limit(self) -> tuple[int, int] | None:
        """(columns, rows) the licence takes at most; None without a limit."""
        return None

    def fits(self, n_cols: int, n_rows: int) -> bool:
        """Whether the licence takes a model of this size."""
        limit = self.size_limit()
        return limit is None or (n_cols <= limit[0] and n_rows <= limit[1])

    def too_large(self, n_cols: int, n_rows: int) -> str:
        """The sentence a refused session and the fallback note carry."""
        cols, rows = self.size_limit() or (n_cols, n_rows)
        return (f"the model has {n_cols} variables and {n_rows} constraints, over the "
                f"size-limited {self.name} licence ({cols} variables, {rows} constraints)")

    @abstractmethod
    def load(self, form: MatrixForm) -> Session:
        """Hand a matrix form to the solver (a :class:`RefusedSession` when it does not fit)."""
