"""``qpm compare SIMS.npz``: solver quality and speed on the same problem, in one table."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from qpm import logs
from qpm.commands._problem import (
    add_limit_arguments,
    add_problem_arguments,
    check_limits,
    load_problem,
    solver_list,
    time_limit_for,
    time_limit_text,
)
from qpm.errors import QPMError

log = logs.get("compare")


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "compare",
        help="compare solvers on one SIMS.npz: quality, bounds, speed, memory",
        description="Solve the same assignment problem (n, k, preset from SIMS.npz's record "
        "unless given) with several solvers, each in its own process with the same time "
        "limit and a memory limit; print one table (objective, bound, gap, distance to the "
        "best bound, time to the first and the final answer, build + hand-off, peak memory, "
        "verified) and, with --out, write compare.json, compare.csv and compare.png "
        "(objective and bound over time).",
    )
    p.add_argument("sims", metavar="SIMS.npz", help="similarity file (A, optional R and b)")
    from qpm.assignment.backends import solver_names

    p.add_argument("--solvers", type=solver_list, default=",".join(solver_names()),
                   help="comma-separated solvers")
    add_problem_arguments(p)
    add_limit_arguments(p)
    add_run_arguments(p)
    from qpm.assignment.bounds import method_names

    p.add_argument("--bounds", default="auto", metavar="METHODS",
                   help="comma-separated independent bounds to prove beside the solvers, each in "
                   f"its own process with the same limits (methods of qpm bound: "
                   f"{', '.join(method_names())}; none: no such row) (default: auto)")
    p.add_argument("--out", metavar="DIR", help="write compare.json, compare.csv and "
                   "compare.png here (default: print the table only)")
    return p


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """How the runs are isolated and repeated (shared with benchmarks/solvers.py)."""
    from qpm.assignment.limits import DEFAULT_GRACE

    g = p.add_argument_group("runs")
    g.add_argument("--repeat", type=int, default=1, metavar="R", help="runs per solver")
    g.add_argument("--jobs", type=int, default=1, help="runs at the same time")
    g.add_argument("--memory-limit", type=float, default=None, metavar="GB",
                   help="address-space limit per run (default: 3/4 of the machine's memory)")
    g.add_argument("--grace", type=float, default=DEFAULT_GRACE, metavar="S",
                   help="seconds past --time-limit before a silent run is killed")
    g.add_argument("--hard-timeout", type=float, default=None, metavar="S",
                   help="kill a run after this many seconds (default: time limit + grace)")


def memory_default() -> float | None:
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return None
    return round(0.75 * total, 1)


def check_run_args(args: argparse.Namespace) -> None:
    for name in ("repeat", "jobs"):
        if getattr(args, name) < 1:
            raise QPMError(f"--{name} must be at least 1, got {getattr(args, name)}.",
                           f"Use e.g. --{name} 1.")
    for name in ("memory_limit", "grace", "hard_timeout"):
        value = getattr(args, name)
        if value is not None and not value > 0:
            flag = "--" + name.replace("_", "-")
            raise QPMError(f"{flag} must be positive, got {value}.", f"Pass a positive {flag}.")


def split_list(text: str, what: str) -> list[str]:
    items = [s.strip() for s in text.split(",") if s.strip()]
    if not items:
        raise QPMError(f"--{what} is empty.", f"Pass e.g. --{what} highs,greedy.")
    return items


def run(args: argparse.Namespace) -> int:
    from qpm.assignment.compare import Limits, compare
    from qpm.assignment.compare_report import format_table, write

    solvers = args.solvers
    forms = split_list(args.formulation, "formulation")
    for f in forms:
        check_limits(argparse.Namespace(**{**vars(args), "formulation": f}))
    check_run_args(args)
    if args.out and Path(args.out).exists() and not Path(args.out).is_dir():
        raise QPMError(f"--out {args.out} is a file.", "Give a folder for the three files.")
    problem, settings, line = load_problem(args)
    limits = Limits(time_limit=time_limit_for(args, problem), mip_gap=args.mip_gap,
                    threads=args.threads, memory_gb=memory_default() if args.memory_limit is None
                    else args.memory_limit,
                    grace=args.grace, hard_timeout=args.hard_timeout)
    header = describe(args.sims, problem, settings, limits,
                      time_limit_text(args, limits.time_limit))
    print(f"{header['title']}\n  {line}\n  {header['limits']}", flush=True)
    from qpm.assignment.backends import HEURISTICS

    # A heuristic has no formulation: one run of it, whatever --formulation lists.
    runs = [(s, f) for s in solvers for f in (forms[:1] if s in HEURISTICS else forms)]
    bounds = bound_list(args.bounds)
    cmp = compare(problem, runs, limits, repeat=args.repeat, jobs=args.jobs, bounds=bounds,
                  on_row=lambda r: log.info(
                      f"{r.label}: {r.status}"
                      + ("" if r.objective is None else f", objective {r.objective:.4f}")
                      + f", {r.wall or 0:.1f} s"))
    cmp.header = header
    print(format_table(cmp))
    if args.out:
        paths = write(cmp, args.out, title=header["title"])
        log.info("wrote " + ", ".join(str(p) for p in paths))
    return 0 if any(r.verified for r in cmp.rows) else 1


def bound_list(text: str) -> tuple[str, ...]:
    """``--bounds a,b`` as method names (``none``: no bound row), each checked."""
    from qpm.assignment.bounds import check_method

    items = split_list(text, "bounds")
    if items == ["none"]:
        return ()
    return tuple(check_method(m) for m in items)


def describe(source: str, problem, settings: dict, limits, limit_text: str | None = None
             ) -> dict:
    """The header every output starts with: which problem, which limits (``limit_text``: how
    to show the time limit, e.g. that it is the default for the size)."""
    pairs = len(problem.pairs())
    forced = (f" (rho {problem.rho:g}: {len(problem.forced_pairs())} forced class pairs)"
              if problem.rules.forced_pairs else "")
    title = (f"{Path(source).name}: F={problem.n_total} features x C={problem.n_classes} "
             f"classes, n={problem.n_features}, k={problem.per_class}, preset "
             f"{problem.preset}{forced}, "
             f"tau={'-' if problem.tau is None else format(problem.tau, '.4g')} "
             f"({pairs} penalised pairs)")
    shown = limit_text or (f"{limits.time_limit} s" if limits.time_limit else "none")
    lim = (f"time limit {shown} per solver, "
           f"gap {limits.mip_gap:g}, threads {limits.threads or 'solver default'}, "
           f"memory {limits.memory_gb or 'unlimited'} GB, killed after "
           f"{limits.kill_after() or 'never'} s, cpus {os.cpu_count()}")
    return {"title": title, "limits": lim, "source": str(source), "F": problem.n_total,
            "C": problem.n_classes, "settings": settings, "tau": problem.tau,
            "time_limit": limits.time_limit, "mip_gap": limits.mip_gap,
            "threads": limits.threads, "memory_gb": limits.memory_gb}
