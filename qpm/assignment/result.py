"""The solver-independent result of one assignment solve.

Why the solve stopped (``termination``) and what the returned assignment is (``solution``,
plus ``from_start`` when it is only the heuristic warm start) are separate, as in Pyomo's newer
solver interface (:mod:`qpm.assignment.status`). The one-word ``status`` of earlier versions is
derived from them and still written to the JSON.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from qpm.assignment.status import (
    SolutionStatus,
    Termination,
    from_legacy_status,
    legacy_status,
)
from qpm.errors import QPMError

# The derived one-word status: "feasible" is a heuristic's answer (no bound); "time_limit" an
# exact solve stopped by a limit (with its best assignment, if any).
STATUSES = ("optimal", "feasible", "time_limit", "infeasible", "error")


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
    ``solution`` None means: derived from ``termination`` and whether there is a matrix.
    """

    termination: Termination | str
    solver: str
    solution: SolutionStatus | str | None = None
    from_start: bool = False  # the assignment is the heuristic warm start, nothing better
    objective: float | None = None
    bound: float | None = None
    selected_features: list[int] = field(default_factory=list)
    matrix: np.ndarray | None = None
    times: SolveTimes = field(default_factory=SolveTimes)
    solver_version: str = ""
    preset: str = "qpm"
    tau: float | None = None
    tau_rule: str | None = None  # the rule that chose tau ("paper", "tight") or "fixed"
    # preset chiqpm: rho and the class pairs (smaller, larger) forced to share k-1 features
    rho: float | None = None
    forced_pairs: list[list[int]] | None = None
    verified: bool = False
    fallback: str | None = None  # why another solver than the one asked for was used
    message: str = ""
    # [seconds, "incumbent" | "bound", value] over the solve, when it was traced
    trace: list | None = None
    # an upper bound proved on its own (qpm.assignment.bounds): {"bound", "method", "seconds"}
    certificate: dict | None = None

    def __post_init__(self) -> None:
        self.termination = Termination(self.termination)
        if self.solution is None:
            if self.matrix is None:
                self.solution = SolutionStatus.NONE
            elif self.termination is Termination.OPTIMAL and not self.from_start:
                self.solution = SolutionStatus.OPTIMAL
            else:
                self.solution = SolutionStatus.FEASIBLE
        self.solution = SolutionStatus(self.solution)

    @property
    def status(self) -> str:
        """The one-word status of earlier versions (``status.legacy_status``)."""
        return legacy_status(self.termination, self.solution)

    @property
    def assignment(self) -> dict[int, list[int]]:
        if self.matrix is None:
            return {}
        return {
            c: sorted(np.flatnonzero(self.matrix[:, c]).tolist())
            for c in range(self.matrix.shape[1])
        }

    @property
    def gap(self) -> float | None:
        """Relative gap |bound - objective| / max(|objective|, 1e-10); None without a bound."""
        if self.objective is None or self.bound is None:
            return None
        if not (math.isfinite(self.objective) and math.isfinite(self.bound)):
            return None
        return abs(self.bound - self.objective) / max(abs(self.objective), 1e-10)

    @property
    def best_bound(self) -> float | None:
        """The lower of the solver's own bound and the independent certificate's."""
        values = [self.bound, None if self.certificate is None else self.certificate["bound"]]
        finite = [float(v) for v in values if v is not None and math.isfinite(v)]
        return min(finite) if finite else None

    @property
    def gap_to_best_bound(self) -> float | None:
        """How far the objective lies below :attr:`best_bound`, relative to |objective|."""
        best = self.best_bound
        if self.objective is None or best is None or not math.isfinite(self.objective):
            return None
        return max(0.0, best - self.objective) / max(abs(self.objective), 1e-10)

    def to_dict(self) -> dict:
        return {
            "status": self.status,
            "termination": self.termination.value,
            "solution_status": self.solution.value,
            "from_start": self.from_start,
            "objective": self.objective,
            "bound": self.bound,
            "gap": self.gap,
            "verified": self.verified,
            "solver": self.solver,
            "solver_version": self.solver_version,
            "fallback": self.fallback,
            "preset": self.preset,
            "tau": self.tau,
            "tau_rule": self.tau_rule,
            **({} if self.rho is None else {"rho": self.rho}),
            **({} if self.forced_pairs is None
               else {"forced_pairs": [[int(a), int(b)] for a, b in self.forced_pairs]}),
            "selected_features": [int(i) for i in self.selected_features],
            "assignment": {str(c): feats for c, feats in self.assignment.items()},
            "shape": None if self.matrix is None else [int(x) for x in self.matrix.shape],
            "times": asdict(self.times),
            "message": self.message,
            "certificate": self.certificate,
            "best_bound": self.best_bound,
            "gap_to_best_bound": self.gap_to_best_bound,
            **({} if self.trace is None else {"trace": self.trace}),
        }

    def save_json(self, path: str | Path) -> None:
        """Write the JSON result atomically (a kill never leaves half a file)."""
        from qpm.io import write_json

        write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, d: dict, n_total: int | None = None) -> AssignmentResult:
        """Rebuild a result from :meth:`to_dict` output.

        The matrix shape comes from ``shape``; older dicts without it need ``n_total`` (F),
        else F is taken as one more than the largest feature index used or selected. Every
        index is bounds-checked: a hand-edited file is refused, never wrapped or guessed.
        """
        fix = "Re-run `qpm solve` to write a fresh result file."
        if not isinstance(d, dict):
            raise QPMError(f"A result must be a JSON object, got {type(d).__name__}.", fix)
        for key in ("status", "solver"):
            if key not in d:
                raise QPMError(f"The result has no {key!r} field.", fix)
        if d["status"] not in STATUSES:
            raise QPMError(f"Unknown result status {d['status']!r}.", fix)
        selected = _indices(d.get("selected_features") or [], "selected_features", fix)
        matrix = _matrix(d, n_total, selected, fix)
        termination, solution = _outcome(d, matrix is not None, fix)
        try:
            times = SolveTimes(**{k: float(v) for k, v in (d.get("times") or {}).items()})
        except (TypeError, ValueError, AttributeError) as exc:
            raise QPMError(f"The result's times are malformed ({exc}).", fix) from None
        if matrix is not None:
            if any(i >= matrix.shape[0] for i in selected) or len(set(selected)) < len(selected):
                raise QPMError("The result's selected_features are out of range or repeated.",
                               fix)
            used = np.flatnonzero(matrix.any(axis=1))
            if selected and not set(used.tolist()) <= set(selected):
                raise QPMError("The result assigns features that are not among its "
                               "selected_features.", fix)

        def num(key: str) -> float | None:
            value = d.get(key)
            if value is None:
                return None
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise QPMError(f"The result's {key} must be a number, got {value!r:.40}.", fix)
            return float(value)

        return cls(
            termination=termination,
            solution=solution,
            from_start=bool(d.get("from_start", False)),
            solver=str(d["solver"]),
            objective=num("objective"),
            bound=num("bound"),
            selected_features=selected,
            matrix=matrix,
            times=times,
            solver_version=str(d.get("solver_version") or ""),
            preset=str(d.get("preset") or "qpm"),
            tau=num("tau"),
            tau_rule=None if d.get("tau_rule") is None else str(d["tau_rule"]),
            rho=num("rho"),
            forced_pairs=_pairs(d.get("forced_pairs"), matrix, fix),
            verified=bool(d.get("verified", False)),
            fallback=d.get("fallback"),
            message=str(d.get("message") or ""),
            trace=d.get("trace") if isinstance(d.get("trace"), list) else None,
            certificate=_certificate(d.get("certificate"), fix),
        )

    @classmethod
    def load_json(cls, path: str | Path, n_total: int | None = None) -> AssignmentResult:
        """Read a result written by :meth:`save_json`."""
        path = Path(path)
        if not path.is_file():
            raise QPMError(f"Result file {path} does not exist.", "Run `qpm solve` first.")
        from qpm.io import read_json

        data = read_json(path, "Re-run `qpm solve` to write a fresh result file.", "Result")
        return cls.from_dict(data, n_total=n_total)


def _outcome(d: dict, has_answer: bool, fix: str) -> tuple[Termination, SolutionStatus]:
    """The termination and solution status of a result dict (files from before these fields
    have only ``status``)."""
    if "termination" not in d:
        return from_legacy_status(d["status"], has_answer)
    try:
        return Termination(d["termination"]), SolutionStatus(d.get("solution_status", "none"))
    except ValueError as exc:
        raise QPMError(f"The result's outcome is malformed ({exc}).", fix) from None


def answer_result(problem, solver: str, termination: Termination, answer, bound, times,
                  message: str = "", from_start: bool = False) -> AssignmentResult:
    """The (not yet verified) result of a formulation: ``answer`` is (selection mask (F,),
    assignment (F, C)) or None; a stop without any answer says so in the message."""
    if answer is None:
        if termination is Termination.OPTIMAL or termination.stopped_early:
            termination = Termination.TIME_LIMIT if termination is Termination.OPTIMAL \
                else termination
            message = message or "no feasible solution found in time"
        return AssignmentResult(termination, solver, bound=bound, times=times,
                                preset=problem.preset, tau=problem.tau, message=message)
    s, W = answer
    W = np.asarray(W, dtype=np.uint8)
    return AssignmentResult(
        termination, solver, from_start=from_start, objective=problem.objective(s, W),
        bound=bound, selected_features=np.flatnonzero(s).tolist(), matrix=W, times=times,
        preset=problem.preset, tau=problem.tau, message=message)


def _certificate(value, fix: str) -> dict | None:
    """A result file's certificate: None, or an object with a numeric bound."""
    if value is None:
        return None
    bound = value.get("bound") if isinstance(value, dict) else None
    if isinstance(bound, bool) or not isinstance(bound, int | float):
        raise QPMError("The result's certificate must be an object with a numeric bound.", fix)
    return {"bound": float(bound), "method": str(value.get("method") or ""),
            "seconds": float(value.get("seconds") or 0.0)}


# A result's matrix is allocated from its "shape": refuse one no real problem has.
MAX_CELLS = 2**31


def _indices(values, what: str, fix: str) -> list[int]:
    """Non-negative integer indices (a float or a negative index is an error, never wrapped)."""
    if not isinstance(values, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
        raise QPMError(f"The result's {what} is malformed: it must be a list of indices >= 0.",
                       fix)
    return list(values)


def _pairs(raw, matrix: np.ndarray | None, fix: str) -> list[list[int]] | None:
    """A result's forced class pairs: a list of [c, d] class indices (within the matrix)."""
    if raw is None:
        return None
    if not isinstance(raw, list) or not all(isinstance(p, list) and len(p) == 2 for p in raw):
        raise QPMError("The result's forced_pairs must be a list of [class, class] pairs.", fix)
    pairs = [_indices(p, "forced_pairs", fix) for p in raw]
    if matrix is not None and any(c >= matrix.shape[1] for p in pairs for c in p):
        raise QPMError("The result's forced_pairs name a class outside its assignment.", fix)
    return pairs


def _matrix(d: dict, n_total: int | None, selected: list[int], fix: str) -> np.ndarray | None:
    """The 0/1 matrix (F, C) of a result dict's "assignment", every index bounds-checked."""
    raw = d.get("assignment") or {}
    if not isinstance(raw, dict):
        raise QPMError("The result's assignment must map class indices to feature lists.", fix)
    try:
        assignment = {int(c): _indices(f, f"assignment of class {c}", fix)
                      for c, f in raw.items()}
    except ValueError as exc:
        raise QPMError(f"The result's assignment or times are malformed ({exc}).", fix) from None
    if not assignment:
        return None
    shape = d.get("shape")
    used = [i for feats in assignment.values() for i in feats]
    if shape is None:
        shape = [n_total or max(used + selected, default=-1) + 1, len(assignment)]
    if (not isinstance(shape, list) or len(shape) != 2
            or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in shape)
            or shape[0] * shape[1] > MAX_CELLS):
        raise QPMError(f"The result's shape {shape!r} is not a plausible [features, classes].",
                       fix)
    F, C = shape
    if n_total is not None and F != n_total:
        raise QPMError(f"The result is for {F} features, but the problem has {n_total}.", fix)
    bad = [c for c in assignment if not 0 <= c < C] or [i for i in used if i >= F]
    if bad:
        raise QPMError(f"The result's assignment has an index out of range ({bad[0]}; "
                       f"shape {F} x {C}).", fix)
    if any(len(set(f)) < len(f) for f in assignment.values()):
        raise QPMError("The result assigns a feature twice to one class.", fix)
    matrix = np.zeros((F, C), dtype=np.uint8)
    for c, feats in assignment.items():
        matrix[feats, c] = 1
    return matrix
