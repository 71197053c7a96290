"""The problem and solver-limit arguments that ``qpm solve`` and ``qpm compare`` share.

n, k and the preset default to what SIMS.npz records (``qpm train`` records its run's), else
to the defaults below, and the command says which it used.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from qpm import logs
from qpm.errors import QPMError

# n: None here, chosen for the file's classes (limits.default_n_features: 50, at most C·k).
DEFAULTS = {"n_features": None, "per_class": 5, "preset": "qpm", "tau_rule": "paper",
            "rho": 0.5}
log = logs.get("problem")


def add_problem_arguments(p: argparse.ArgumentParser, formulation: bool = True) -> None:
    """n, k, preset, tau and the redundancy weight (and ``--formulation`` where it applies)."""
    g = p.add_argument_group("problem (default: what SIMS.npz records, else the value shown)")
    g.add_argument("--n-features", type=int, default=None, metavar="N",
                   help="features to select, n (default: recorded, else 50, but at most "
                   "classes x k)")
    g.add_argument("--per-class", type=int, default=None, metavar="K",
                   help=f"features per class, k (default: recorded, else {DEFAULTS['per_class']})")
    g.add_argument("--preset", default=None,
                   help=f"constraint preset (default: recorded, else {DEFAULTS['preset']})")
    g.add_argument("--rho", type=float, default=None, metavar="RHO",
                   help="preset chiqpm: the int(RHO * C) closest class pairs share k-1 "
                   f"features (default: recorded, else {DEFAULTS['rho']})")
    if formulation:
        g.add_argument("--formulation", default="auto",
                       help="auto (cuts where the preset allows it), full or cuts")
    g.add_argument("--redundancy-threshold", type=float, default=None, metavar="T",
                   help="tau: pairs with R >= T are penalised (default: chosen by --tau-rule)")
    g.add_argument("--tau-rule", default=None, metavar="RULE",
                   help="how tau is chosen when not given: paper (the reference "
                   "implementation's minimum viable threshold) or tight (the smallest threshold "
                   "a greedy search accepts; penalises more pairs) "
                   f"(default: recorded, else {DEFAULTS['tau_rule']})")
    g.add_argument("--redundancy-weight", type=float, default=1.0, metavar="W",
                   help="weight of the redundancy penalty")


def add_limit_arguments(p: argparse.ArgumentParser) -> None:
    from qpm.assignment.limits import LARGE_CELLS, LARGE_TIME_LIMIT, MIN_TIME_LIMIT

    g = p.add_argument_group("limits")
    g.add_argument("--time-limit", type=float, default=None, metavar="S",
                   help=f"seconds (default: scaled with features x classes, from "
                   f"{MIN_TIME_LIMIT:.0f} s up to {LARGE_TIME_LIMIT:.0f} s at {LARGE_CELLS:,} "
                   "and more; printed)")
    g.add_argument("--mip-gap", type=float, default=1e-4, metavar="G",
                   help="relative MIP gap to stop at")
    g.add_argument("--threads", type=int, default=None, metavar="N",
                   help="solver threads (default: the solver's choice)")


def check_limits(args: argparse.Namespace) -> None:
    from qpm.assignment.presets import get_preset
    from qpm.assignment.redundancy import check_tau_rule
    from qpm.assignment.solving import FORMULATIONS

    if args.preset is not None:
        get_preset(args.preset)
    if getattr(args, "tau_rule", None) is not None:
        check_tau_rule(args.tau_rule)
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


def solver_list(text: str) -> list[str]:
    """``--solvers a,b,c`` as an argparse type: each name checked against the registry."""
    from qpm.assignment.backends import solver_names

    items = [s.strip() for s in text.split(",") if s.strip()]
    if not items:
        raise argparse.ArgumentTypeError("empty list; pass e.g. highs,greedy")
    unknown = [s for s in items if s not in solver_names()]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown solver {unknown[0]!r} (choose from {', '.join(solver_names())})")
    return items


def load_problem(args: argparse.Namespace):
    """(problem, settings, source line) for SIMS.npz and the arguments.

    ``settings`` holds the n, k, preset and tau rule in use; the line says where each came from
    (the command line, the file's record, or the defaults for a file that records none).
    """
    from qpm.assignment.cache import load_similarities
    from qpm.assignment.limits import default_n_features

    sims = load_similarities(args.sims)
    recorded = sims.settings
    settings, origin = {}, {}
    for key, default in DEFAULTS.items():
        given = getattr(args, key, None)
        if given is not None:
            settings[key], origin[key] = given, "given"
        elif key in recorded:
            settings[key], origin[key] = recorded[key], "recorded"
        else:
            settings[key], origin[key] = default, "default"
    if settings["n_features"] is None:  # never more features than the classes can use
        n_total, n_classes = sims.A.shape
        settings["n_features"] = default_n_features(n_classes, settings["per_class"], n_total)
    from qpm.assignment.presets import get_preset

    pairs = get_preset(settings["preset"]).rules.forced_pairs
    if origin["rho"] == "given" and not pairs:
        raise QPMError(f"--rho applies to presets with forced class pairs; preset "
                       f"{settings['preset']} has none.", "Drop --rho, or use --preset chiqpm.")
    problem = sims.problem(
        n_features=settings["n_features"], per_class=settings["per_class"],
        tau=args.redundancy_threshold, tau_rule=settings["tau_rule"],
        redundancy_weight=args.redundancy_weight, preset=settings["preset"],
        rho=settings["rho"],
    )
    shown = [k for k in DEFAULTS if k != "rho" or pairs]
    line = ", ".join(f"{_short(k)}={settings[k]}" for k in shown)
    if not recorded:
        line += f" ({Path(args.sims).name} records no run settings: defaults unless given)"
    else:
        where = {o: [_short(k) for k in shown if origin[k] == o] for o in set(origin.values())}
        where = {o: v for o, v in where.items() if v}
        line += " (" + "; ".join(f"{o}: {', '.join(v)}" for o, v in sorted(where.items())) + ")"
    return problem, settings, line


def time_limit_for(args: argparse.Namespace, problem) -> float:
    """--time-limit, or the default for the problem's size (the commands print which:
    :func:`time_limit_text`, with their results, so that bad input stays one line)."""
    from qpm.assignment.limits import default_time_limit

    if args.time_limit is not None:
        return args.time_limit
    return default_time_limit(problem.n_total, problem.n_classes)


def time_limit_text(args: argparse.Namespace, limit: float) -> str:
    """The limit in use, saying when it is the default for the size."""
    if args.time_limit is not None:
        return f"{limit:g} s"
    return f"{limit:g} s (no --time-limit given: the default for this size)"


def _short(key: str) -> str:
    return {"n_features": "n", "per_class": "k", "tau_rule": "tau rule"}.get(key, key)
