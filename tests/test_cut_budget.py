"""The cut loop uses the time it was given when it cannot branch.

Before: a root that stalled with too little time left to branch returned TIME_LIMIT at once
(on the ImageNet size after 304 s of 600). Now it widens its clique search while that lifts
the bound and spends what is left on restarts of the swap search from the incumbent.
"""

from __future__ import annotations

import time

import numpy as np

from qpm.assignment.backends import get_backend
from qpm.assignment.formulations import SolveOptions
from qpm.assignment.formulations.cuts import loop
from qpm.assignment.heuristic import heuristic_solution
from qpm.assignment.status import Termination
from qpm.assignment.synthetic import make_instance
from qpm.assignment.verifier import verify


def test_a_root_too_late_to_branch_runs_to_its_limit(monkeypatch):
    # Branching is never allowed and the gap can never be certified (gap 1e-12): the old
    # loop stopped at its first stall, about 0.6 s into this 6 s budget.
    monkeypatch.setattr(loop, "MIP_MIN_LPS", 10**6)
    problem = make_instance("small", seed=0)
    start = heuristic_solution(problem, restarts=1)
    limit = 6.0
    t0 = time.perf_counter()
    result = loop.solve(problem, get_backend("highs"),
                        SolveOptions(time_limit=limit, threads=1, mip_gap=1e-12, start=start))
    wall = time.perf_counter() - t0
    assert result.termination in (Termination.TIME_LIMIT, Termination.OPTIMAL)
    if result.termination is Termination.TIME_LIMIT:
        assert limit - 1.5 * loop.SEARCH_MARGIN - 0.5 <= wall <= limit + 1.0
    assert result.objective >= start.objective - 1e-9
    assert result.bound >= result.objective - 1e-9
    check = verify(problem, np.asarray(result.selected_features), result.matrix,
                   result.objective)
    assert check.ok, check.violations


def test_widening_the_clique_search_lowers_the_stalled_bound(monkeypatch):
    problem = make_instance("small", seed=0)
    start = heuristic_solution(problem, restarts=1)

    def root(steps: int) -> tuple[float, int]:
        monkeypatch.setattr(loop, "MIP_MIN_LPS", 10**6)
        monkeypatch.setattr(loop, "WIDEN_STEPS", steps)
        opts = SolveOptions(time_limit=20.0, threads=1, mip_gap=1e-12, start=start)
        opts.deadline = time.perf_counter() + 20.0
        cs = loop.CutSolver(problem, opts, get_backend("highs"))
        cs.best.offer(problem, start.mask, start.matrix)
        cs.build()
        cs.root(opts.deadline, opts.deadline)
        return cs.bound, cs.widened

    plain, none = root(0)
    wide, widened = root(3)
    assert none == 0 and widened >= 1
    assert wide < plain - 1e-6  # the wider search found cliques the plain one missed
    assert wide >= start.objective - 1e-6  # still a valid bound


def test_the_heuristic_continues_from_a_given_selection():
    problem = make_instance("tiny", seed=3)
    first = heuristic_solution(problem, restarts=1)
    more = heuristic_solution(problem, restarts=30, seed=5, initial=first.selected)
    assert more.objective >= first.objective - 1e-12
    check = verify(problem, more.selected, more.matrix, more.objective)
    assert check.ok, check.violations
