"""The solver-independent result of one assignment solve."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

STATUSES = ("optimal", "time_limit", "infeasible", "error")


@dataclass
class SolveTimes:
    """Seconds spent building the Pyomo model, handing it to the solver, and solving."""

    build: float = 0.0
    handoff: float = 0.0
    solve: float = 0.0


@dataclass
class AssignmentResult:
    """A verified (or failed) assignment.

    ``matrix`` is the dense 0/1 array w of shape (F, C); ``assignment`` maps a class index
    to its sorted feature indices; ``bound`` is None where the method proves none (greedy).
    """

    status: str
    solver: str
    objective: float | None = None
    bound: float | None = None
    selected_features: list[int] = field(default_factory=list)
    matrix: np.ndarray | None = None
    times: SolveTimes = field(default_factory=SolveTimes)
    solver_version: str = ""
    preset: str = "qpm"
    tau: float | None = None
    verified: bool = False
    fallback: str | None = None  # why another solver than the one asked for was used
    message: str = ""

    @property
    def assignment(self) -> dict[int, list[int]]:
        if self.matrix is None:
            return {}
        return {c: sorted(np.flatnonzero(self.matrix[:, c]).tolist()) for c in range(self.matrix.shape[1])}

    @property
    def gap(self) -> float | None:
        """Relative gap |bound - objective| / max(|objective|, 1e-10); None without a bound."""
        if self.objective is None or self.bound is None:
            return None
        if not (math.isfinite(self.objective) and math.isfinite(self.bound)):
            return None
        return abs(self.bound - self.objective) / max(abs(self.objective), 1e-10)

    def to_dict(self) -> dict:
        return {
            "status": self.status,
            "objective": self.objective,
            "bound": self.bound,
            "gap": self.gap,
            "verified": self.verified,
            "solver": self.solver,
            "solver_version": self.solver_version,
            "fallback": self.fallback,
            "preset": self.preset,
            "tau": self.tau,
            "selected_features": [int(i) for i in self.selected_features],
            "assignment": {str(c): feats for c, feats in self.assignment.items()},
            "times": asdict(self.times),
            "message": self.message,
        }

    def save_json(self, path: str | Path) -> None:
        """Write the JSON result atomically (a kill never leaves half a file)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2))
        tmp.replace(path)
