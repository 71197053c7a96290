"""The greedy + swap heuristic (:mod:`qpm.assignment.heuristic`) as a backend of its own.

It works on the problem's arrays, not on a matrix form, so it has no session; it proves no
bound. Constraints a user preset adds to the Pyomo model are unknown to it (the preset's
:class:`~qpm.assignment.presets.Rules` are obeyed).
"""

from __future__ import annotations

import time

import numpy as np

from qpm.assignment.backends.base import Backend, BackendOutcome
from qpm.assignment.formulations.compile import MatrixForm
from qpm.errors import QPMError


class GreedyBackend(Backend):
    name = "greedy"
    exact = False
    restarts = 20

    def available(self) -> tuple[bool, str]:
        return True, ""

    def version(self) -> str:
        import qpm

        return f"qpm {qpm.__version__} heuristic"

    def load(self, form: MatrixForm):
        raise QPMError(
            "The greedy solver works on the problem, not on a matrix model.",
            "Use --solver highs, scip or gurobi for matrix formulations.",
        )

    def run(self, problem, time_limit: float | None = None, seed: int = 0):
        """The heuristic's solution (selected, matrix, objective) within ``time_limit``."""
        from qpm.assignment.heuristic import heuristic_solution

        return heuristic_solution(problem, restarts=self.restarts, seed=seed, time_limit=time_limit)

    def solve(self, model, time_limit=None, mip_gap=1e-4, threads=None, warm_start=True):
        """Solve the problem the model was built from; writes s, w, y into the model."""
        from qpm.assignment.formulations.full import set_start

        problem = getattr(model, "qpm_problem", None)
        if problem is None:
            raise QPMError(
                "This model was not built by qpm.assignment.formulations.full.build_model.",
                "Use build_model(problem) or another solver.",
            )
        t0 = time.perf_counter()
        h = self.run(problem, time_limit)
        set_start(model, problem, selection_mask(problem, h.selected), h.matrix)
        return BackendOutcome(
            status="feasible",
            objective=float(h.objective),
            solve_seconds=time.perf_counter() - t0,
            message="heuristic solution; optimality not proven",
        )


def selection_mask(problem, selected) -> np.ndarray:
    """An (F,) bool mask from feature indices (or a mask)."""
    s = np.asarray(selected)
    if s.dtype == bool and s.size == problem.n_total:
        return s
    mask = np.zeros(problem.n_total, dtype=bool)
    mask[s.astype(np.int64)] = True
    return mask
