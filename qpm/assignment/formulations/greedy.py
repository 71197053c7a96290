"""The greedy formulation: the greedy + swap heuristic (:mod:`qpm.assignment.heuristic`) alone.

It works on the problem's arrays and needs no solver; it proves no bound, so it stops with
termination ``heuristic``. Constraints a user preset adds to the Pyomo model are unknown to it
(the preset's :class:`~qpm.assignment.presets.Rules` are obeyed).
"""

from __future__ import annotations

import time

from qpm.assignment.formulations import SolveOptions
from qpm.assignment.heuristic import heuristic_solution
from qpm.assignment.result import AssignmentResult, SolveTimes, answer_result
from qpm.assignment.status import Termination

RESTARTS = 20


def version() -> str:
    import qpm

    return f"qpm {qpm.__version__} heuristic"


def solve(problem, opts: SolveOptions) -> AssignmentResult:
    """The heuristic's assignment within the time left; the result is NOT verified."""
    t0 = time.perf_counter()
    h = heuristic_solution(problem, restarts=RESTARTS, seed=0, time_limit=opts.remaining())
    times = SolveTimes(solve=time.perf_counter() - t0)
    if h.matrix is None:  # forced pairs it could not meet
        return answer_result(problem, "greedy", Termination.HEURISTIC, None, None, times,
                             "the heuristic found no assignment that obeys every forced pair")
    answer = (h.mask, h.matrix)
    if opts.trace is not None:
        opts.trace.incumbent(problem.objective(*answer))
    return answer_result(problem, "greedy", Termination.HEURISTIC, answer, None, times,
                         "heuristic solution; optimality not proven")
