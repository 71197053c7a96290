"""``qpm solve SIMS.npz``: the feature-class assignment from cached similarities.

Prints a summary table (or, with ``--json``, the result JSON) on stdout and writes a file only
with ``--out``; exits 0 only for a verified assignment.
"""

from __future__ import annotations

import argparse
import json

from qpm import logs
from qpm.commands._problem import (
    add_limit_arguments,
    add_problem_arguments,
    check_limits,
    load_problem,
    time_limit_for,
    time_limit_text,
)
from qpm.errors import QPMError

log = logs.get("solve")


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "solve",
        help="solve the feature-class assignment from SIMS.npz",
        description="Select n features and assign k to each class (the QPM assignment) from "
        "the similarities written by `qpm similarities` or `qpm train`, verify the answer and "
        "print it; --out writes the result JSON, --json prints it on stdout.",
    )
    from qpm.assignment.backends import DEFAULT_SOLVER, solver_names

    p.add_argument("sims", metavar="SIMS.npz", help="similarity file (A, optional R and b)")
    p.add_argument("--solver", default=DEFAULT_SOLVER, choices=solver_names(),
                   help="gurobi falls back to HiGHS when its licence cannot take the model; "
                   "greedy is the heuristic alone")
    add_problem_arguments(p)
    add_limit_arguments(p)
    p.add_argument(
        "--strict-solver", action="store_true",
        help="fail instead of falling back to HiGHS when Gurobi cannot take the model",
    )
    p.add_argument("--no-warm-start", action="store_true", help="skip the heuristic warm start")
    out = p.add_argument_group("output")
    out.add_argument("--out", default=None, metavar="RESULT.json",
                     help="write the result JSON here (default: no file)")
    out.add_argument("--json", action="store_true",
                     help="print the result JSON on stdout instead of the summary")
    return p


def _check_args(args: argparse.Namespace) -> None:
    check_limits(args)
    if args.out is not None:
        from qpm.commands._common import check_output

        check_output(args.out, "--out", inputs=(args.sims,), suffixes=(".json",))


def _fmt(x, spec: str = ".6g") -> str:
    return "-" if x is None else format(x, spec)


def format_table(result, problem: str = "", limit: str = "") -> str:
    """The human-readable summary of one result (``problem``: a line saying which;
    ``limit``: the time limit it ran under)."""
    t = result.times
    gap = result.gap
    rows = [("problem", problem)] if problem else []
    rows += [("time limit", limit)] if limit else []
    rows += [
        ("status", result.status + ("" if result.verified else " (not verified)")),
        ("objective", _fmt(result.objective, ".6f")),
        ("bound", _fmt(result.bound, ".6f")),
        ("gap", "-" if gap is None else f"{100 * gap:.4f} %"),
        ("times (s)", f"build {t.build:.2f}, handoff {t.handoff:.2f}, solve {t.solve:.2f}"),
        ("solver", f"{result.solver} {result.solver_version}".strip()),
        ("preset", result.preset),
        *([("forced pairs", f"{len(result.forced_pairs or [])} class pairs share k-1 "
            f"features (rho {result.rho:g})")] if result.rho is not None else []),
        ("tau", _fmt(result.tau) + ("" if result.tau_rule is None
                                    else f" ({result.tau_rule} rule)")),
        ("selected", f"{len(result.selected_features)} features"),
        ("fallback", result.fallback or "-"),
    ]
    if result.message:
        rows.append(("note", result.message))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def run(args: argparse.Namespace) -> int:
    from qpm.assignment.solving import resolve_formulation, solve

    _check_args(args)
    problem, _, line = load_problem(args)
    # a misfit fails before anything is said
    resolve_formulation(args.formulation, problem, args.solver)
    line = f"{problem.n_total} features x {problem.n_classes} classes, {line}"
    log.debug(f"problem: {line}")
    limit = time_limit_for(args, problem)
    result = solve(
        problem,
        solver=args.solver,
        time_limit=limit,
        mip_gap=args.mip_gap,
        threads=args.threads,
        warm_start=not args.no_warm_start,
        strict_solver=args.strict_solver,
        formulation=args.formulation,
        progress=args.progress,
    )
    # The answer is shown before the file is written: a failing write loses nothing.
    if args.json:  # stdout holds the JSON alone
        log.info(f"time limit {time_limit_text(args, limit)}")
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(format_table(result, line, time_limit_text(args, limit)))
    if args.out is not None:
        try:
            result.save_json(args.out)
        except OSError as exc:
            raise QPMError(f"Could not write {args.out} ({exc.strerror or exc}).",
                           "The result is printed above; re-run with a writable --out.") from None
        if args.json:
            log.info(f"wrote {args.out}")
        else:
            print(f"wrote {args.out}")
    if not result.verified:
        log.error(f"qpm solve: no verified assignment ({result.status}). {result.message}".strip())
        return 1
    return 0
