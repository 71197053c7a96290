"""``solve(problem, solver=...)``: model, hand-off, solve, decode, verify.

The full formulation is solved as a loop that is exact for every preset: solve the model the
preset built, and if the answer breaks one of the preset's :class:`Rules` (a class without
exactly k features, two identical classes), add exactly those constraints and re-solve
warm-started. Each model in the loop is a relaxation of the preset's problem, so the first
answer that breaks no rule is optimal for it and the last bound is valid. Every result passes
the independent verifier before it is returned.
"""

from __future__ import annotations

import logging
import os
import time

import numpy as np

from qpm.assignment.backends import DEFAULT_BACKEND, LicenceLimit, SolveOptions, get_backend
from qpm.assignment.formulations import full as qmodel
from qpm.assignment.formulations.compile import ModelCompiler
from qpm.assignment.formulations.greedy import selection_mask
from qpm.assignment.presets import get_preset
from qpm.assignment.problem import AssignmentProblem
from qpm.assignment.result import AssignmentResult, SolveTimes
from qpm.assignment.trace import Trace
from qpm.assignment.verifier import check_result
from qpm.errors import QPMError

log = logging.getLogger("qpm.solve")

FORMULATIONS = ("auto", "full", "cuts")
FALLBACK = "highs"
# The heuristic warm start may use this share of the time limit (and at most HEURISTIC_CAP s).
HEURISTIC_SHARE = 0.1
HEURISTIC_CAP = 30.0
HEURISTIC_PATIENCE = 10


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


def _say(progress: bool, text: str) -> None:
    # Each solve round: shown with `progress` (qpm solve --progress) or at -v.
    log.log(logging.INFO if progress else logging.DEBUG, text)


# Presets whose rules the cut formulation builds itself; a user preset's apply() acts on the
# full model's w variables, which the cut model has only for a few classes.
CUT_PRESETS = ("qpm", "qpm-lazy", "no-redundancy")


def resolve_formulation(formulation: str, problem: AssignmentProblem) -> str:
    """``auto``: the cut formulation where it applies (built-in presets with k per class),
    else the straightforward Pyomo model."""
    if formulation not in FORMULATIONS:
        raise QPMError(
            f"Unknown formulation {formulation!r}.", f"Choose one of: {', '.join(FORMULATIONS)}."
        )
    fits = problem.preset in CUT_PRESETS
    if formulation == "cuts" and not fits:
        raise QPMError(
            f"The cut formulation cannot solve preset {problem.preset!r}: it handles only "
            f"{', '.join(CUT_PRESETS)} (a preset's own Pyomo constraints need the full model).",
            "Use --formulation full.",
        )
    if formulation == "auto":
        return "cuts" if fits else "full"
    return formulation


def _licence_line(backend_name: str, why: str) -> str:
    return (
        f"{backend_name}: {why}; solving with HiGHS instead. Fix: install a full or academic "
        "Gurobi licence, or pass --solver highs|scip."
    )


def _pick_backend(solver: str, strict: bool):
    """The backend to use and, if another than asked for, why (the fallback note)."""
    backend = get_backend(solver)
    ok, why = backend.available()
    if ok:
        return backend, None
    if solver == "gurobi" and not strict:
        note = _licence_line("gurobi", why.rstrip("."))
        log.warning(note)
        return get_backend(FALLBACK), note
    raise QPMError(
        f"Solver {solver!r} is not usable: {why}", "Install it or choose another --solver."
    )


def full_size(problem: AssignmentProblem, preset_name: str | None = None) -> tuple[int, int]:
    """(variables, constraints) of the full model before any lazy rows: for licence checks."""
    F, C, P = problem.n_total, problem.n_classes, len(problem.pairs())
    return F + F * C + P, F * C + 1 + P + C + 1


def _feasible(form, x: np.ndarray, tol: float = 1e-6) -> bool:
    """Whether a full column vector satisfies every row and bound of a matrix form."""
    if not np.all(np.isfinite(x)):
        return False
    if np.any(x < form.col_lo - tol) or np.any(x > form.col_hi + tol):
        return False
    activity = form.A @ x
    return bool(np.all(activity >= form.row_lo - tol) and np.all(activity <= form.row_hi + tol))


def _heuristic(problem: AssignmentProblem, opts: SolveOptions):
    from qpm.assignment.heuristic import heuristic_solution

    limit = HEURISTIC_CAP if opts.time_limit is None else HEURISTIC_SHARE * opts.time_limit
    # Restarts until the time share is spent or 10 in a row found nothing better.
    return heuristic_solution(problem, restarts=1000, seed=0, patience=HEURISTIC_PATIENCE,
                              time_limit=min(limit, HEURISTIC_CAP))


def solve_full(problem: AssignmentProblem, backend, opts: SolveOptions) -> AssignmentResult:
    """The straightforward Pyomo model through ``backend``, with the exact repair loop."""
    rules = get_preset(problem.preset).rules
    times = SolveTimes()
    t0 = time.perf_counter()
    backend.check_size(*full_size(problem))
    m = qmodel.build_model(problem)
    start = opts.start
    start_mask = None
    if start is not None:
        start_mask = np.zeros(problem.n_total, dtype=bool)
        start_mask[np.asarray(start.selected, dtype=np.int64)] = True
        qmodel.set_start(m, problem, start_mask, start.matrix)
    times.build = time.perf_counter() - t0
    _say(opts.progress, f"built the model in {times.build:.1f} s")

    t0 = time.perf_counter()
    compiler = ModelCompiler(m)
    form = compiler.form
    backend.check_size(form.n_cols, form.n_rows)
    session = backend.load(form)
    _follow_full(session, compiler, m, problem, rules, opts.trace)
    times.handoff = time.perf_counter() - t0
    _say(opts.progress, f"{form.n_cols} variables, {form.n_rows} rows, handed over in "
         f"{times.handoff:.1f} s")
    if start is not None and not _feasible(form, form.start):
        # The heuristic knows the preset's rules, not the rows a user preset adds.
        _say(opts.progress, "the heuristic start breaks a row of this preset; not used")
        start = start_mask = None
    vector = form.start if (start is not None and opts.warm_start) else None

    answer, status, bound, message = None, "time_limit", None, ""
    rounds = 0
    while True:
        remaining = opts.remaining()
        if remaining is not None and remaining <= 0:
            break
        rounds += 1
        out = session.solve(remaining, opts.mip_gap, opts.threads, vector)
        times.solve += out.solve_seconds
        if out.bound is not None:
            bound = out.bound
        status, message = out.status, out.message
        if out.x is None:
            break
        compiler.store(out.x)
        s, W = qmodel.decode(m, problem)
        bad, dup = qmodel.violations(problem, rules, s, W)
        if not bad and not dup:
            answer = (s, W)
            if opts.trace is not None:
                opts.trace.incumbent(problem.objective(s, W))
            break
        _say(opts.progress, f"round {rounds}: {len(bad)} class(es) without k features, "
             f"{len(dup)} identical class pair(s); adding them and re-solving")
        t0 = time.perf_counter()
        qmodel.add_uniqueness(m, problem, dup)
        qmodel.add_per_class_exact(m, problem, bad)
        if start_mask is not None:
            qmodel.set_start(m, problem, start_mask, start.matrix)
        delta = compiler.update()
        backend.check_size(form.n_cols, form.n_rows)
        session.apply(delta)
        vector = compiler.current_start() if vector is not None else None
        times.handoff += time.perf_counter() - t0
        status = "time_limit"  # until a solve of the extended model says otherwise
    session.close()

    if start is not None and status not in ("infeasible", "error"):
        start_value = problem.objective(start_mask, start.matrix)
        worse = answer is not None and problem.objective(*answer) < start_value - 1e-9 * max(
            1.0, abs(start_value)
        )
        if answer is None or worse:
            answer, status = (start_mask, np.asarray(start.matrix)), "time_limit"
            message = "the warm start (no better solution that obeys every rule in time)"
    if status == "optimal" and rounds > 1:
        message = f"exact after {rounds} rounds of adding violated constraints"
    return _result(problem, backend.name, status, answer, bound, times, message)


def _follow_full(session, compiler, m, problem, rules, trace: Trace | None) -> None:
    """Record the solver's bounds, and its solutions that break no rule, into ``trace``."""
    if trace is None:
        return

    def solution(x: np.ndarray, _objective: float) -> None:
        compiler.store(x)
        s, W = qmodel.decode(m, problem)
        bad, dup = qmodel.violations(problem, rules, s, W)
        if not bad and not dup:
            trace.incumbent(problem.objective(s, W))

    session.on_bound = trace.bound
    session.on_solution = solution


def _result(problem, solver, status, answer, bound, times, message) -> AssignmentResult:
    if answer is None:
        if status in ("optimal", "time_limit"):
            status, message = "time_limit", message or "no feasible solution found in time"
        return AssignmentResult(status=status, solver=solver, bound=bound, times=times,
                                preset=problem.preset, tau=problem.tau, message=message)
    s, W = answer
    W = np.asarray(W, dtype=np.uint8)
    return AssignmentResult(
        status=status,
        solver=solver,
        objective=problem.objective(s, W),
        bound=bound,
        selected_features=np.flatnonzero(s).tolist(),
        matrix=W,
        times=times,
        preset=problem.preset,
        tau=problem.tau,
        message=message,
    )


def solve_greedy(problem: AssignmentProblem, backend, opts: SolveOptions) -> AssignmentResult:
    t0 = time.perf_counter()
    h = backend.run(problem, opts.remaining())
    times = SolveTimes(solve=time.perf_counter() - t0)
    answer = (selection_mask(problem, h.selected), h.matrix)
    if opts.trace is not None:
        opts.trace.incumbent(problem.objective(*answer))
    return _result(problem, backend.name, "feasible", answer, None, times,
                   "heuristic solution; optimality not proven")


def _run(problem, backend, formulation, opts) -> AssignmentResult:
    if not backend.exact:
        return solve_greedy(problem, backend, opts)
    if formulation == "cuts":
        from qpm.assignment.formulations.cuts.loop import solve_cuts

        return solve_cuts(problem, backend, opts)
    return solve_full(problem, backend, opts)


def solve(
    problem: AssignmentProblem,
    solver: str = DEFAULT_BACKEND,
    time_limit: float | None = None,
    mip_gap: float = 1e-4,
    threads: int | None = None,
    warm_start: bool = True,
    strict_solver: bool = False,
    formulation: str = "auto",
    progress: bool = False,
    trace: Trace | None = None,
) -> AssignmentResult:
    """Solve ``problem`` under its preset and return a VERIFIED result (else QPMError).

    ``solver`` gurobi falls back to HiGHS (noted in ``result.fallback``, a warning on the
    ``qpm.solve`` logger) when gurobipy is missing, unlicensed or its licence is too small for
    the model, unless ``strict_solver``. ``time_limit`` (seconds) covers the whole call.
    ``trace`` (a :class:`~qpm.assignment.trace.Trace`) records the incumbent and the bound
    over time; it is also returned as ``result.trace``.
    """
    if time_limit is not None and not time_limit > 0:
        raise QPMError(f"time_limit must be positive, got {time_limit}.", "Use e.g. 300.")
    if not 0 <= mip_gap < 1:
        raise QPMError(f"mip_gap must be in [0, 1), got {mip_gap}.", "Use e.g. 1e-4.")
    threads = cap_threads(threads)
    begin = time.perf_counter()
    formulation = resolve_formulation(formulation, problem)
    backend, fallback = _pick_backend(solver, strict_solver)
    opts = SolveOptions(
        time_limit=time_limit,
        mip_gap=mip_gap,
        threads=threads,
        warm_start=warm_start,
        progress=progress,
        deadline=None if time_limit is None else begin + float(time_limit),
        trace=trace,
    )
    if warm_start and backend.exact:
        opts.start = _heuristic(problem, opts)
        _say(progress, f"heuristic warm start: objective {opts.start.objective:.4f}")
        if trace is not None:
            trace.incumbent(problem.objective(selection_mask(problem, opts.start.selected),
                                              opts.start.matrix))
    try:
        result = _run(problem, backend, formulation, opts)
    except LicenceLimit as exc:
        if strict_solver:
            raise QPMError(
                f"Gurobi cannot take this model: {exc}.",
                "Install a full or academic Gurobi licence, or use --solver highs|scip "
                "(without --strict-solver gurobi falls back to HiGHS).",
            ) from None
        fallback = _licence_line(backend.name, str(exc))
        log.warning(fallback)
        backend = get_backend(FALLBACK)
        result = _run(problem, backend, formulation, opts)
    result.solver = backend.name
    result.solver_version = backend.version()
    result.fallback = fallback
    result.preset = problem.preset
    result.tau = problem.tau
    result.tau_rule = problem.tau_rule
    result = check_result(problem, result)
    if trace is not None:
        trace.incumbent(result.objective if result.verified else None)
        trace.bound(result.bound)
        result.trace = trace.to_list()
    return result

