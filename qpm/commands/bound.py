"""``qpm bound SIMS.npz``: an upper bound on the assignment optimum, without solving.

Prints the bound, the method that proved it and its time (``--json``: an object with
``bound``, ``method``, ``seconds``); the problem flags are ``qpm solve``'s.
"""

from __future__ import annotations

import argparse
import json
import math

from qpm import logs
from qpm.commands._problem import (
    add_problem_arguments,
    check_limits,
    load_problem,
    time_limit_for,
)
from qpm.errors import QPMError

log = logs.get("bound")


def add_parser(subparsers) -> argparse.ArgumentParser:
    from qpm.assignment.bounds import AUTO, method_names

    p = subparsers.add_parser(
        "bound",
        help="an upper bound on the assignment optimum of SIMS.npz (a certificate)",
        description="Compute an upper bound on the optimum of the assignment problem in "
        "SIMS.npz (n, k, preset and tau as qpm solve takes them): no assignment is worth more. "
        "Use it to certify any answer: its distance to this bound is at most how far it is "
        "from optimal.",
    )
    p.add_argument("sims", metavar="SIMS.npz", help="similarity file (A, optional R and b)")
    add_problem_arguments(p, formulation=False)
    p.add_argument("--method", default=AUTO, choices=method_names(),
                   help="auto: lp where every class has exactly k features, else topk; "
                   "topk: the Lagrangian bound without the redundancy penalty (seconds, any "
                   "preset); lp: the cut formulation's root LP (default: auto)")
    p.add_argument("--time-limit", type=float, default=None, metavar="S",
                   help="seconds for the bound (default: until it converges; 600 s for "
                   "problems of 100,000 or more features x classes, printed when used)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="LP solver threads (default: the solver's choice)")
    p.add_argument("--bound-backend", default="highs", choices=("highs", "scip", "gurobi"),
                   help="LP solver of the lp method")
    p.add_argument("--json", action="store_true",
                   help="print {bound, method, seconds, ...} as JSON instead of the summary")
    return p


def _check(args: argparse.Namespace) -> None:
    check_limits(argparse.Namespace(**{**vars(args), "formulation": "auto", "mip_gap": 0.0}))


def run(args: argparse.Namespace) -> int:
    from qpm.assignment.bounds import upper_bound

    _check(args)
    problem, _, line = load_problem(args)
    found = upper_bound(problem, args.method, time_limit=time_limit_for(args, problem),
                        threads=args.threads, backend=args.bound_backend, progress=args.progress)
    if not math.isfinite(found.value):  # upper_bound refuses these; never print one
        raise QPMError("No bound was found.", "Give it more time with --time-limit.")
    if args.json:
        print(json.dumps({**found.to_dict(), "preset": problem.preset, "tau": problem.tau,
                          "n_features": problem.n_features, "per_class": problem.per_class}))
        return 0
    print(f"problem   {problem.n_total} features x {problem.n_classes} classes, {line}")
    print(f"bound     {found.value:.6f}")
    print(f"method    {found.method} ({found.detail})" if found.detail
          else f"method    {found.method}")
    print(f"seconds   {found.seconds:.2f}")
    return 0
