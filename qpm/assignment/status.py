"""Solver outcomes in three separate words, as Pyomo's newer solver interface has them.

Why a solve stopped (:class:`Termination`, Pyomo's ``TerminationCondition``), what the returned
point is (:class:`SolutionStatus`, Pyomo's ``SolutionStatus``), and whether a backend can run
here at all (:class:`Availability`, Pyomo's ``Availability``: a size-limited licence is a state
of the backend, not an error). Plain string enums: they go into the result JSON as their values.
"""

from __future__ import annotations

from enum import Enum


class Termination(str, Enum):
    """Why the solve stopped."""

    #: the gap between the answer and the bound is closed (within ``mip_gap``)
    OPTIMAL = "optimal"
    TIME_LIMIT = "time_limit"
    #: stopped from outside while it ran by the watchdog, past its time limit (see
    #: ``backends.base.watchdog``); a signal never ends as a result (``backends.interrupts``)
    INTERRUPTED = "interrupted"
    #: another limit of the solver: nodes, iterations, solutions, memory
    OTHER_LIMIT = "other_limit"
    INFEASIBLE = "infeasible"
    #: the backend's licence does not take a model this size (Pyomo: licensingProblems)
    LICENCE_LIMIT = "licence_limit"
    ERROR = "error"
    #: a heuristic finished its search; it proves no bound
    HEURISTIC = "heuristic"

    @property
    def stopped_early(self) -> bool:
        """Stopped by a limit before it could prove optimality (its bound, if any, holds)."""
        return self in (Termination.TIME_LIMIT, Termination.INTERRUPTED, Termination.OTHER_LIMIT)


class SolutionStatus(str, Enum):
    """What the returned point is."""

    OPTIMAL = "optimal"
    FEASIBLE = "feasible"
    NONE = "none"


class Availability(str, Enum):
    """Whether a backend can run here; true for the two states in which it runs."""

    AVAILABLE = "available"
    #: runs, but only models up to ``Backend.size_limit()`` (e.g. the pip wheel of Gurobi)
    LIMITED_LICENCE = "limited_licence"
    NOT_INSTALLED = "not_installed"
    NO_LICENCE = "no_licence"

    def __bool__(self) -> bool:
        return self in (Availability.AVAILABLE, Availability.LIMITED_LICENCE)

    @classmethod
    def of(cls, value: Availability | bool) -> Availability:
        """An :class:`Availability` from a backend's answer (True/False from backends written
        before the states existed: available / not installed)."""
        if isinstance(value, Availability):
            return value
        return cls.AVAILABLE if value else cls.NOT_INSTALLED


def legacy_status(termination: Termination, solution: SolutionStatus) -> str:
    """The one-word ``status`` results had before these enums (still in the result JSON):
    optimal, feasible (a heuristic's answer), time_limit (stopped by any limit, or a returned
    warm start), infeasible or error."""
    if solution is SolutionStatus.OPTIMAL:
        return "optimal"
    if termination is Termination.HEURISTIC:
        return "feasible"
    if termination in (Termination.INFEASIBLE, Termination.ERROR):
        return termination.value
    if termination is Termination.LICENCE_LIMIT:
        return "error"
    return "time_limit"


def from_legacy_status(status: str, has_answer: bool) -> tuple[Termination, SolutionStatus]:
    """The termination and solution status a result file written with ``status`` only meant."""
    answer = SolutionStatus.FEASIBLE if has_answer else SolutionStatus.NONE
    if status == "optimal":
        return Termination.OPTIMAL, SolutionStatus.OPTIMAL if has_answer else answer
    if status == "feasible":
        return Termination.HEURISTIC, answer
    if status == "time_limit":
        return Termination.TIME_LIMIT, answer
    return Termination(status), answer
