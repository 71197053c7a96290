"""The incumbent and bound of one solve over time, for ``qpm compare``'s "who is ahead when".

A :class:`Trace` is started when a solve starts and keeps only improvements: an incumbent
point when a better FEASIBLE assignment, priced from the arrays, is known (the heuristic start,
the cut formulation's repaired answers, a solver answer that breaks no rule, the final answer),
a bound point when a solver proves a lower upper bound (from its callbacks: HiGHS, Gurobi and
SCIP report their dual bound while they branch; an optimal LP of a relaxation counts too).
Solver incumbents of a relaxation are NOT incumbents here: their values are not the problem's.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

INCUMBENT = "incumbent"
BOUND = "bound"


@dataclass
class Trace:
    """``points`` holds ``(seconds since start, kind, value)``, kind ``incumbent`` or ``bound``."""

    start: float = field(default_factory=time.perf_counter)
    points: list[tuple[float, str, float]] = field(default_factory=list)
    best: float = -math.inf
    bound_value: float = math.inf

    def now(self) -> float:
        return time.perf_counter() - self.start

    def incumbent(self, value: float | None) -> None:
        """A feasible assignment worth ``value`` is known now (kept if it improves)."""
        if value is None or not math.isfinite(value):
            return
        if value > self.best + 1e-9 * max(1.0, abs(value)):
            self.best = float(value)
            self.points.append((self.now(), INCUMBENT, float(value)))

    def bound(self, value: float | None) -> None:
        """A valid upper bound ``value`` is proven now (kept if it is lower)."""
        if value is None or not math.isfinite(value):
            return
        if value < self.bound_value - 1e-9 * max(1.0, abs(value)):
            self.bound_value = float(value)
            self.points.append((self.now(), BOUND, float(value)))

    def series(self, kind: str) -> list[tuple[float, float]]:
        return [(t, v) for t, k, v in self.points if k == kind]

    def first(self, kind: str = INCUMBENT) -> float | None:
        """Seconds to the first point of ``kind`` (None if there is none)."""
        return next((t for t, k, _ in self.points if k == kind), None)

    def to_list(self) -> list[list]:
        return [[round(t, 4), k, v] for t, k, v in self.points]
