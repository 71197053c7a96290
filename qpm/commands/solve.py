"""``qpm solve SIMS.npz``: the feature-class assignment from cached similarities.

Prints a summary table and writes RESULT.json; exits 0 only for a verified assignment.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from qpm.errors import QPMError


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "solve",
        help="solve the feature-class assignment from SIMS.npz",
        description="Select n features and assign k to each class (the QPM assignment) from "
        "the similarities written by `qpm similarities`, verify the answer and write it as JSON.",
    )
    p.add_argument("sims", metavar="SIMS.npz", help="similarity file (A, optional R and b)")
    p.add_argument("--solver", default="gurobi", help="gurobi (default), scip, highs or greedy")
    p.add_argument("--preset", default="qpm", help="constraint preset (default: qpm)")
    p.add_argument(
        "--formulation", default="auto", help="auto (default), full or cuts model formulation"
    )
    p.add_argument("--n-features", type=int, default=50, help="features to select (n)")
    p.add_argument("--per-class", type=int, default=5, help="features per class (k)")
    p.add_argument(
        "--redundancy-threshold", type=float, default=None, metavar="T",
        help="tau: pairs with R >= T are penalised (default: the smallest feasible tau)",
    )
    p.add_argument("--redundancy-weight", type=float, default=1.0, metavar="W")
    p.add_argument("--time-limit", type=float, default=None, metavar="S", help="seconds")
    p.add_argument("--mip-gap", type=float, default=1e-4, metavar="G", help="relative MIP gap")
    p.add_argument("--threads", type=int, default=None, metavar="N")
    p.add_argument(
        "--strict-solver", action="store_true",
        help="fail instead of falling back to HiGHS when Gurobi cannot take the model",
    )
    p.add_argument("--no-warm-start", action="store_true", help="skip the heuristic warm start")
    p.add_argument("--progress", action="store_true", help="report each solve round on stderr")
    p.add_argument("--out", default="RESULT.json", metavar="RESULT.json", help="result file")
    return p


def _check_args(args: argparse.Namespace) -> None:
    from qpm.assignment.backends import backend_names
    from qpm.assignment.presets import get_preset
    from qpm.assignment.solving import FORMULATIONS

    if args.solver not in backend_names():
        raise QPMError(
            f"Unknown solver {args.solver!r}.", f"Choose one of: {', '.join(backend_names())}."
        )
    get_preset(args.preset)
    if args.formulation not in FORMULATIONS:
        raise QPMError(
            f"Unknown formulation {args.formulation!r}.",
            f"Choose one of: {', '.join(FORMULATIONS)}.",
        )
    if args.time_limit is not None and not (math.isfinite(args.time_limit) and args.time_limit > 0):
        raise QPMError(f"--time-limit must be a positive number, got {args.time_limit}.",
                       "Use e.g. --time-limit 300.")
    if not (math.isfinite(args.mip_gap) and 0 <= args.mip_gap < 1):
        raise QPMError(f"--mip-gap must be in [0, 1), got {args.mip_gap}.", "Use e.g. 1e-4.")
    if args.threads is not None and args.threads < 1:
        raise QPMError(f"--threads must be at least 1, got {args.threads}.", "Use e.g. 4.")
    out = Path(args.out)
    if out.is_dir():
        raise QPMError(f"--out {out} is a folder.", "Give a file name such as RESULT.json.")


def _fmt(x, spec: str = ".6g") -> str:
    return "-" if x is None else format(x, spec)


def format_table(result) -> str:
    """The human-readable summary of one result."""
    t = result.times
    gap = result.gap
    rows = [
        ("status", result.status + ("" if result.verified else " (not verified)")),
        ("objective", _fmt(result.objective, ".6f")),
        ("bound", _fmt(result.bound, ".6f")),
        ("gap", "-" if gap is None else f"{100 * gap:.4f} %"),
        ("times (s)", f"build {t.build:.2f}, handoff {t.handoff:.2f}, solve {t.solve:.2f}"),
        ("solver", f"{result.solver} {result.solver_version}".strip()),
        ("preset", result.preset),
        ("tau", _fmt(result.tau)),
        ("selected", f"{len(result.selected_features)} features"),
        ("fallback", result.fallback or "-"),
    ]
    if result.message:
        rows.append(("note", result.message))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def run(args: argparse.Namespace) -> int:
    from qpm.assignment.cache import load_similarities
    from qpm.assignment.solving import solve

    _check_args(args)
    sims = load_similarities(args.sims)
    problem = sims.problem(
        n_features=args.n_features,
        per_class=args.per_class,
        tau=args.redundancy_threshold,
        redundancy_weight=args.redundancy_weight,
        preset=args.preset,
    )
    result = solve(
        problem,
        solver=args.solver,
        time_limit=args.time_limit,
        mip_gap=args.mip_gap,
        threads=args.threads,
        warm_start=not args.no_warm_start,
        strict_solver=args.strict_solver,
        formulation=args.formulation,
        progress=args.progress,
    )
    result.save_json(args.out)
    print(format_table(result))
    print(f"wrote {args.out}")
    if not result.verified:
        print(f"qpm solve: no verified assignment ({result.status}). {result.message}".strip())
        return 1
    return 0
