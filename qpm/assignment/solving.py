"""``solve(problem, solver=...)``: the facade. It picks the formulation and the backend, applies
the fallback policy, verifies the answer and logs what it did.

A solver name is a backend (gurobi, scip, highs, or one a user registered) for the full or the
cut formulation, or ``greedy``, the heuristic formulation that needs no backend. The fallback
policy (:data:`FALLBACKS`) is data: a backend that cannot run here, or whose licence does not
take the model (a solve that ends with ``licence_limit``), is replaced by another one unless
``strict_solver``; the result records why. Every result passes the independent verifier before
it is returned.
"""

from __future__ import annotations

import importlib
import logging
import os
import time
from dataclasses import dataclass

from qpm.assignment import bounds
from qpm.assignment.backends import DEFAULT_SOLVER, HEURISTICS, check_solver, get_backend
from qpm.assignment.formulations import SolveOptions, greedy, say
from qpm.assignment.heuristic import heuristic_solution
from qpm.assignment.presets import get_preset, preset_names
from qpm.assignment.problem import AssignmentProblem
from qpm.assignment.result import AssignmentResult
from qpm.assignment.status import Availability, Termination
from qpm.assignment.trace import Trace
from qpm.assignment.verifier import check_result
from qpm.errors import QPMError

log = logging.getLogger("qpm.solve")

FORMULATIONS = ("auto", "full", "cuts")
# The formulations that run on a backend, by module (imported on first use: Pyomo is not needed
# for the greedy one); each has solve(problem, backend, opts) -> AssignmentResult.
_ON_BACKEND = {"full": "qpm.assignment.formulations.full",
               "cuts": "qpm.assignment.formulations.cuts.loop"}
# The heuristic warm start may use this share of the time limit (and at most HEURISTIC_CAP s).
HEURISTIC_SHARE = 0.1
HEURISTIC_CAP = 30.0
HEURISTIC_PATIENCE = 10


@dataclass(frozen=True)
class Fallback:
    """Which backend stands in for an asked one, its display name, and how a user gets the
    asked one working."""

    to: str
    to_name: str
    fix: str


# The fallback policy: asked backend -> the one used when it is unusable or too small.
FALLBACKS = {
    "gurobi": Fallback("highs", "HiGHS", "install a full or academic Gurobi licence, or pass "
                       "--solver highs|scip"),
}


def cpu_count() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def cap_threads(threads: int | None) -> int | None:
    """``threads`` at most the CPU count (one line when lowered): thousands of solver threads
    only make the solver overrun its time limit."""
    if threads is None:
        return None
    if threads < 1:
        raise QPMError(f"threads must be at least 1, got {threads}.", "Use e.g. --threads 4.")
    cpus = cpu_count()
    if threads > cpus:
        log.warning("--threads %d is more than the %d CPUs here; using %d.", threads, cpus, cpus)
        return cpus
    return threads


def resolve_formulation(formulation: str, problem: AssignmentProblem,
                        solver: str = DEFAULT_SOLVER) -> str:
    """The formulation that runs: ``greedy`` for the heuristic solver; ``auto`` is the cut
    formulation where the preset allows it (``spec.cuts``), else the straightforward model."""
    if formulation not in FORMULATIONS:
        raise QPMError(
            f"Unknown formulation {formulation!r}.", f"Choose one of: {', '.join(FORMULATIONS)}."
        )
    if solver in HEURISTICS:
        return "greedy"
    fits = problem.spec.cuts
    if formulation == "cuts" and not fits:
        why = problem.spec.cuts_note or ("a preset's own Pyomo constraints need the full "
                                         "model")
        raise QPMError(
            f"The cut formulation cannot solve preset {problem.preset!r}: it handles only "
            f"{', '.join(_cut_presets())} ({why}).",
            "Use --formulation full.",
        )
    if formulation == "auto":
        return "cuts" if fits else "full"
    return formulation


def _cut_presets() -> list[str]:
    return [name for name in preset_names() if get_preset(name).cuts]


def _fallback_note(asked: str, why: str) -> str:
    policy = FALLBACKS[asked]
    return f"{asked}: {why.rstrip('.')}; solving with {policy.to_name} instead. Fix: {policy.fix}."


def _pick_backend(solver: str, strict: bool):
    """The backend to use and, if another than asked for, why (the fallback note)."""
    backend = get_backend(solver)
    state, why = backend.available()
    if Availability.of(state):
        return backend, None
    if solver in FALLBACKS and not strict:
        note = _fallback_note(solver, why)
        log.warning(note)
        return get_backend(FALLBACKS[solver].to), note
    raise QPMError(
        f"Solver {solver!r} is not usable: {why}", "Install it or choose another --solver."
    )


def _warm_start(problem: AssignmentProblem, opts: SolveOptions):
    limit = HEURISTIC_CAP if opts.time_limit is None else HEURISTIC_SHARE * opts.time_limit
    # Restarts until the time share is spent or 10 in a row found nothing better.
    start = heuristic_solution(problem, restarts=1000, seed=0, patience=HEURISTIC_PATIENCE,
                               time_limit=min(limit, HEURISTIC_CAP))
    if start.matrix is None:
        log.info("the heuristic found no assignment that obeys every forced pair; solving "
                 "without a warm start")
        return None
    say(log, opts.progress, f"heuristic warm start: objective {start.objective:.4f}")
    if opts.trace is not None:
        opts.trace.incumbent(problem.objective(start.mask, start.matrix))
    return start


def _on_backend(problem, solver: str, formulation: str, opts: SolveOptions, strict: bool,
                gurobi_params: dict | None = None):
    """(result, the backend that ran, fallback note) of a formulation that needs a backend."""
    backend, fallback = _pick_backend(solver, strict)
    if gurobi_params and backend.name == "gurobi":
        backend.params = dict(gurobi_params)
    if opts.warm_start:
        opts.start = _warm_start(problem, opts)
    run = importlib.import_module(_ON_BACKEND[formulation]).solve
    result = run(problem, backend, opts)
    if result.termination is not Termination.LICENCE_LIMIT:
        return result, backend, fallback
    policy = FALLBACKS.get(backend.name)
    if strict or policy is None:
        fix = policy.fix if policy else "choose another --solver"
        raise QPMError(f"{backend.name} cannot take this model: {result.message}.",
                       f"{fix[0].upper()}{fix[1:]}.")
    fallback = _fallback_note(backend.name, result.message)
    log.warning(fallback)
    backend = get_backend(policy.to)
    return run(problem, backend, opts), backend, fallback


def solve(
    problem: AssignmentProblem,
    solver: str = DEFAULT_SOLVER,
    time_limit: float | None = None,
    mip_gap: float = 1e-4,
    threads: int | None = None,
    warm_start: bool = True,
    strict_solver: bool = False,
    formulation: str = "auto",
    progress: bool = False,
    trace: Trace | None = None,
    bound_method: str | None = None,
    bound_time: float | None = None,
    gurobi_params: dict | None = None,
) -> AssignmentResult:
    """Solve ``problem`` under its preset and return a VERIFIED result (else QPMError).

    ``solver`` gurobi falls back to HiGHS (noted in ``result.fallback``, a warning on the
    ``qpm.solve`` logger) when gurobipy is missing, unlicensed or its licence is too small for
    the model, unless ``strict_solver``. ``time_limit`` (seconds) covers the whole call.
    ``trace`` (a :class:`~qpm.assignment.trace.Trace`) records the incumbent and the bound
    over time; it is also returned as ``result.trace``. ``bound_method`` (a method of
    :mod:`qpm.assignment.bounds`) adds an independent upper bound, ``result.certificate``,
    computed after the solve in at most ``bound_time`` seconds. ``gurobi_params`` are set on
    every Gurobi model of the solve (e.g. ``{"BQPCuts": 2}``; for ``solver="gurobi"`` only).
    """
    if time_limit is not None and not time_limit > 0:
        raise QPMError(f"time_limit must be positive, got {time_limit}.", "Use e.g. 300.")
    if not 0 <= mip_gap < 1:
        raise QPMError(f"mip_gap must be in [0, 1), got {mip_gap}.", "Use e.g. 1e-4.")
    check_solver(solver)
    threads = cap_threads(threads)
    begin = time.perf_counter()
    asked, formulation = formulation, resolve_formulation(formulation, problem, solver)
    if asked == "auto" and formulation == "full" and problem.spec.cuts_note:
        log.info(f"preset {problem.preset}: {problem.spec.cuts_note}; formulation auto uses "
                 "the full model")
    if bound_method is not None:
        bounds.check_supported(bound_method, problem)
    if gurobi_params and solver != "gurobi":
        raise QPMError(f"Gurobi parameters were given but the solver is {solver!r}.",
                       "Pass --solver gurobi, or drop --gurobi-param.")
    opts = SolveOptions(
        time_limit=time_limit,
        mip_gap=mip_gap,
        threads=threads,
        warm_start=warm_start,
        progress=progress,
        deadline=None if time_limit is None else begin + float(time_limit),
        trace=trace,
    )
    if formulation == "greedy":
        result, version, fallback = greedy.solve(problem, opts), greedy.version(), None
    else:
        result, backend, fallback = _on_backend(problem, solver, formulation, opts,
                                                strict_solver, gurobi_params)
        result.solver, version = backend.name, backend.version()
    result.solver_version = version
    result.fallback = fallback
    result.preset = problem.preset
    result.tau = problem.tau
    result.tau_rule = problem.tau_rule
    if problem.rules.forced_pairs:
        result.rho, result.forced_pairs = problem.rho, problem.forced_pairs().tolist()
    result = check_result(problem, result)
    if bound_method is not None:
        bounds.certify(problem, result, bound_method, bound_time, threads)
    if trace is not None:
        trace.incumbent(result.objective if result.verified else None)
        trace.bound(result.bound)
        result.trace = trace.to_list()
    return result
