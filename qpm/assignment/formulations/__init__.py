"""Formulations: the ways an assignment problem becomes something a solver answers.

``full`` (one straightforward Pyomo model, every w_ic), ``cuts`` (selection, one value per
class and cuts added in rounds) and ``greedy`` (the heuristic, which needs no solver). The
facade :func:`qpm.assignment.solve` picks one and, for full and cuts, the backend.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass


@dataclass
class SolveOptions:
    """What the facade passes to a formulation.

    ``start`` is a feasible solution of the full problem (an object with ``selected``
    feature indices, an (F, C) ``matrix`` and ``objective``), or None; ``deadline`` is a
    ``time.perf_counter()`` value by which everything must be done, or None; ``trace`` a
    :class:`~qpm.assignment.trace.Trace` to record progress into, or None.
    """

    time_limit: float | None = None
    mip_gap: float = 1e-4
    threads: int | None = None
    warm_start: bool = True
    progress: bool = False
    start: object | None = None
    deadline: float | None = None
    trace: object | None = None

    def remaining(self) -> float | None:
        """Seconds left before ``deadline`` (None without a limit, never below 0)."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - time.perf_counter())


def say(log: logging.Logger, progress: bool, text: str) -> None:
    """One line per solve round: shown with ``progress`` (``qpm solve --progress``) or at -v."""
    log.log(logging.INFO if progress else logging.DEBUG, text)
