"""``qpm solve SIMS.npz``: the feature-class assignment from cached similarities.

Prints a summary table (or, with ``--json``, the result JSON) on stdout and writes a file only
with ``--out``; exits 0 only for a verified assignment.
"""

from __future__ import annotations

import argparse
import json
import math

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
    add_certificate_arguments(p)
    p.add_argument("--gurobi-param", action="append", default=[], metavar="NAME=VALUE",
                   help="a Gurobi parameter for every model of the solve, repeatable, e.g. "
                   "BQPCuts=2 (Gurobi's cuts for products of binaries; PSDCuts, RLTCuts and "
                   "PreQLinearize act on quadratic models only); --solver gurobi only")
    out = p.add_argument_group("output")
    out.add_argument("--out", default=None, metavar="RESULT.json",
                     help="write the result JSON here (default: no file)")
    out.add_argument("--json", action="store_true",
                     help="print the result JSON on stdout instead of the summary")
    return p


def add_certificate_arguments(p: argparse.ArgumentParser) -> None:
    """The independent bound a solve reports its answer against (``qpm bound``'s methods)."""
    from qpm.assignment.bounds import method_names

    g = p.add_argument_group("certificate (an upper bound proved on its own, as qpm bound)")
    g.add_argument("--bound-method", default="topk", choices=["none", *method_names()],
                   help="after the solve, prove an independent upper bound with this method and "
                   "report the answer's gap to the best bound known (its own or this one); "
                   "none: skip (default: topk, a few seconds)")
    g.add_argument("--bound-time", type=float, default=30.0, metavar="S",
                   help="seconds for that bound, after the solve's own time limit")


def check_certificate_arguments(args: argparse.Namespace) -> str | None:
    """The bound method to run (None for none); one line for a bad --bound-time."""
    if not (math.isfinite(args.bound_time) and args.bound_time > 0):
        raise QPMError(f"--bound-time must be a positive number, got {args.bound_time}.",
                       "Use e.g. --bound-time 30.")
    return None if args.bound_method == "none" else args.bound_method


def gurobi_params(items: list[str]) -> dict:
    """``NAME=VALUE`` strings as a dict; a value reads as an int, else a float, else text."""
    out: dict = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name.strip() or not text.strip():
            raise QPMError(f"--gurobi-param {item!r} is not NAME=VALUE.",
                           "Pass e.g. --gurobi-param BQPCuts=2.")
        value: object = text.strip()
        for kind in (int, float):
            try:
                value = kind(text)
                break
            except ValueError:
                continue
        out[name.strip()] = value
    return out


def _check_args(args: argparse.Namespace) -> None:
    check_limits(args)
    check_certificate_arguments(args)
    if args.gurobi_param and args.solver != "gurobi":
        raise QPMError("--gurobi-param applies to --solver gurobi only.",
                       "Add --solver gurobi or drop --gurobi-param.")
    gurobi_params(args.gurobi_param)
    if args.out is not None:
        from qpm.commands._common import check_output

        check_output(args.out, "--out", inputs=(args.sims,), suffixes=(".json",))


def _fmt(x, spec: str = ".6g") -> str:
    return "-" if x is None else format(x, spec)


def _certificate(result) -> str:
    """The independent bound and the answer's distance to the best bound known."""
    cert = result.certificate
    if cert is None:
        return "-"
    best = result.gap_to_best_bound
    to_best = "" if best is None else (f"; {100 * best:.4f} % below the best bound "
                                       f"{result.best_bound:.6f}")
    return f"{cert['bound']:.6f} ({cert['method']}, {cert['seconds']:.1f} s){to_best}"


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
        ("certificate", _certificate(result)),
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
        bound_method=check_certificate_arguments(args),
        bound_time=args.bound_time,
        gurobi_params=gurobi_params(args.gurobi_param),
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
