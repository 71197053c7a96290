"""``lp``: the root LP of the cut formulation, on its own (no incumbent search, no branching).

Top-k cuts for every class, McCormick rows for the pairs the LP point violates and clique
rows ``alpha * s(Q) - y(Q) <= alpha (alpha + 1) / 2``, added in rounds (the loop of
:mod:`qpm.assignment.formulations.cuts.loop`); every LP optimum along the way is an upper bound
of the problem without uniqueness, so of every preset with exactly k features per class. When
the rounds stall and time is left, the clique search widens (more and larger cliques), as the
solve's root does when it is too late to branch.
"""

from __future__ import annotations

import math
import time

from qpm.assignment.backends import get_backend
from qpm.assignment.bounds import Bound, BoundOptions
from qpm.assignment.formulations import SolveOptions
from qpm.assignment.formulations.cuts.loop import CutSolver
from qpm.assignment.status import Availability
from qpm.errors import QPMError


class _RootOnly(CutSolver):
    """The cut loop's root stage for its bound alone."""

    def polish(self, scores, deadline, tries: int = 1) -> None:
        """No incumbents wanted: the root's rounding and swap search are skipped."""

    def too_late_to_branch(self, final: float | None) -> bool:
        # There is no branching to leave time for: with a time limit, a stalled root widens
        # its clique search and goes on until the limit.
        return final is not None


def lp_bound(problem, opts: BoundOptions) -> Bound:
    if not problem.rules.per_class_exact:
        raise QPMError(f"The lp bound needs exactly k features per class; preset "
                       f"{problem.preset!r} uses a total budget.", "Use --method topk.")
    backend = get_backend(opts.backend)
    state, why = backend.available()
    if state is not Availability.AVAILABLE:
        raise QPMError(f"The lp bound cannot use {opts.backend}: {why}",
                       "Use --bound-backend highs (or scip).")
    so = SolveOptions(time_limit=opts.time_limit, threads=opts.threads, progress=opts.progress)
    if opts.time_limit is not None:
        so.deadline = time.perf_counter() + opts.time_limit
    cs = _RootOnly(problem, so, backend)
    cs.build()
    cs.root(so.deadline, so.deadline)
    if cs.refused is not None:
        raise QPMError(f"{opts.backend} cannot take the root LP: {cs.refused}.",
                       "Use --bound-backend highs.")
    rows = 0 if cs.lp_live is None else int(cs.lp_live.sum())
    detail = (f"{len(cs.lp_seconds)} LP solve(s), {rows} rows, clique search widened "
              f"{cs.widened} time(s)")
    return Bound(cs.bound if math.isfinite(cs.bound) else math.inf, "lp", 0.0, detail)
