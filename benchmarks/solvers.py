"""Compare the solver backends (and formulations) on generated instances: a loop over sizes
around :func:`qpm.assignment.compare.compare` (the code behind ``qpm compare``).

    python benchmarks/solvers.py --size small,medium --solvers highs,scip,gurobi,greedy \
        --formulations full,cuts --time-limit 300 --out results.json
    python benchmarks/solvers.py --family all --size cub --solvers highs --formulations cuts \
        --time-limit 600 --threads 1 --out families.json
    python benchmarks/solvers.py --family all --size cub --solvers highs --formulations cuts \
        --time-limit 60 --threads 1 --reference families.json   # gap to the 600 s bounds

Every run goes through :func:`qpm.assignment.solve` (so through the verifier) in its own
process with the time limit and a memory limit; a backend that crashes, hangs, is missing or
falls back is reported as such and the benchmark goes on. ``--instance SIMS.npz`` runs a
cached file instead (n, k and preset from the file's record unless given, as qpm compare).
``--family`` picks the generator families of :mod:`qpm.assignment.synthetic` (``all``: every
one, plus ``real`` and ``real-expanded`` from a run's ``--real-features``); ``--reference``
adds the best bounds of an earlier ``--out`` file to the "to best bound" figures.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qpm.assignment.backends import HEURISTICS  # noqa: E402
from qpm.assignment.cache import load_similarities, save_similarities  # noqa: E402
from qpm.assignment.compare import Limits, compare  # noqa: E402
from qpm.assignment.compare_report import format_table, to_json  # noqa: E402
from qpm.assignment.problem import AssignmentProblem  # noqa: E402
from qpm.assignment.similarities import compute_similarities  # noqa: E402
from qpm.assignment.synthetic import (  # noqa: E402
    FAMILIES,
    SIZES,
    expand_features,
    make_bias,
    make_instance,
)
from qpm.commands._problem import solver_list  # noqa: E402
from qpm.commands.compare import bound_list, describe, memory_default  # noqa: E402
from qpm.io import write_json  # noqa: E402


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="small",
                   help=f"comma-separated sizes of {', '.join(SIZES)} (default small)")
    p.add_argument("--instance", help="a SIMS.npz to use instead of generated instances")
    p.add_argument("--family", default="default",
                   help=f"comma-separated instance families of {', '.join(FAMILIES + REAL)}, "
                   "or 'all' (default: default)")
    p.add_argument("--real-features", default=DEFAULT_REAL, metavar="FEATURES.npz",
                   help=f"a run's features.npz for the real families (default {DEFAULT_REAL})")
    p.add_argument("--reference", metavar="results.json",
                   help="an earlier --out file whose best bounds count as well")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--solvers", type=solver_list, default="highs,scip,gurobi,greedy")
    p.add_argument("--formulations", default="full,cuts")
    p.add_argument("--bounds", default="auto",
                   help="independent bounds (qpm bound's methods), one row each, or none "
                   "(default: auto)")
    p.add_argument("--preset", default=None, help="default: qpm (or the file's record)")
    p.add_argument("--tau-rule", default=None,
                   help="paper or tight (default: the file's record, else paper)")
    p.add_argument("--n-features", type=int, help="n (default: the size's or the file's)")
    p.add_argument("--per-class", type=int, help="k (default: the size's or the file's)")
    p.add_argument("--time-limit", type=float, default=300.0)
    p.add_argument("--mip-gap", type=float, default=1e-4)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--hard-timeout", type=float, default=None,
                   help="kill a run after this many seconds (default: time limit + 120)")
    p.add_argument("--jobs", type=int, default=1, help="runs at the same time (default 1)")
    p.add_argument("--memory-limit", type=float, default=None, metavar="GB",
                   help="address-space limit per run (default: 3/4 of the memory)")
    p.add_argument("--repeat", type=int, default=1, help="runs per solver and formulation")
    p.add_argument("--write-instance", metavar="PATH",
                   help="save the (last) instance as SIMS.npz, with its n, k and preset")
    p.add_argument("--out", metavar="results.json")
    return p.parse_args(argv)


REAL = ("real", "real-expanded")
# What `make run` writes: the default run's pooled features (128 x 10 classes).
DEFAULT_REAL = "runs/mnist-5k/small-cnn/0/features.npz"


def families(args) -> list[str]:
    names = list(FAMILIES + REAL) if args.family == "all" else args.family.split(",")
    unknown = [f for f in names if f not in FAMILIES + REAL]
    if unknown:
        raise SystemExit(f"unknown family {unknown[0]!r}; choose from "
                         f"{', '.join(FAMILIES + REAL)} or all")
    return names


def real_instance(args, family: str, size: str, **kw) -> AssignmentProblem:
    """A and R from a run's features: as they are, or grown to ``size`` (expand_features)."""
    import numpy as np

    if not Path(args.real_features).is_file():
        raise SystemExit(f"no features file {args.real_features!r} for family {family!r}: "
                         "run `make run` first or pass --real-features RUN/features.npz")
    with np.load(args.real_features, allow_pickle=False) as data:
        X, y = data["features"], data["labels"]
        b = data["b"] if family == "real" and "b" in data.files else None
    if family == "real-expanded":
        s = SIZES[size]
        X, y = expand_features(X, y, s.n_total, s.n_classes, seed=args.seed)
    A, R = compute_similarities(X, y)
    b = make_bias(A.shape[0], args.seed) if b is None else b
    return AssignmentProblem(A=A, R=R, b=b, **kw)


def instances(args):
    """(name, problem) for each size and family, or the one file."""
    if args.instance:
        sims = load_similarities(args.instance)
        rec = sims.settings
        yield Path(args.instance).name, sims.problem(
            n_features=args.n_features or rec.get("n_features", 50),
            per_class=args.per_class or rec.get("per_class", 5),
            preset=args.preset or rec.get("preset", "qpm"),
            tau_rule=args.tau_rule or rec.get("tau_rule", "paper"))
        return
    for size in [s for s in args.size.split(",") if s]:
        kw = {"preset": args.preset or "qpm", "tau_rule": args.tau_rule or "paper"}
        if args.n_features:
            kw["n_features"] = args.n_features
        if args.per_class:
            kw["per_class"] = args.per_class
        for family in families(args):
            name = f"family={family} size={size} seed={args.seed}"
            if family in REAL:
                yield name, real_instance(args, family, size, **kw)
            else:
                yield name, make_instance(size, seed=args.seed, family=family, **kw)


def reference_bounds(path: str | None) -> dict[str, float]:
    """Best bound per instance title in an earlier --out file."""
    if not path:
        return {}
    import json

    data = json.loads(Path(path).read_text())
    return {inst["title"]: inst["best_bound"] for inst in data["instances"]
            if inst.get("best_bound") is not None}


def print_reference_gaps(cmp, reference: float) -> None:
    """How far each verified answer lies below the better of this run's and the reference's
    best bound (the '60 s answer within 1% of the best bound' figure)."""
    best = min(b for b in (reference, cmp.best_bound) if b is not None)
    for r in cmp.rows:
        if r.verified and r.objective is not None:
            gap = max(0.0, best - r.objective) / max(abs(r.objective), 1e-10)
            print(f"  {r.label} {r.formulation}: {100 * gap:.3f}% below the best bound "
                  f"{best:.4f} (this run and the reference)")


def print_certificates(cmp) -> None:
    """Per verified answer: its gap to its own bound (before issue 22: the only certificate)
    and to the best bound of the comparison, with the run that proved it (after)."""
    for r in cmp.rows:
        if r.verified and r.objective is not None:
            own = "-" if r.gap is None else f"{100 * r.gap:.3f}%"
            best = cmp.to_bound(r)
            print(f"  certificate {r.label} {r.formulation}: own bound {own}; best bound "
                  f"{'-' if best is None else f'{100 * best:.3f}%'} by {cmp.best_bound_by}")


def main(argv=None) -> int:
    args = parse(argv)
    limits = Limits(time_limit=args.time_limit, mip_gap=args.mip_gap, threads=args.threads,
                    memory_gb=args.memory_limit or memory_default(), grace=120.0,
                    hard_timeout=args.hard_timeout)
    runs = []
    for solver in args.solvers:
        forms = ["auto"] if solver in HEURISTICS else [f for f in args.formulations.split(",") if f]
        runs.extend((solver, form) for form in forms)
    results = []
    for name, problem in instances(args):
        if args.write_instance:
            save_similarities(args.write_instance, problem.A, problem.R, problem.b,
                              settings={"n_features": problem.n_features,
                                        "per_class": problem.per_class,
                                        "preset": problem.preset,
                                        "tau_rule": problem.tau_rule})
        header = describe(name, problem, {}, limits)
        print(f"{header['title']}\n  {header['limits']}, tau rule "
              f"{problem.tau_rule}, load {os.getloadavg()[0]:.2f}", flush=True)
        cmp = compare(problem, runs, limits, repeat=args.repeat, jobs=args.jobs,
                      bounds=bound_list(args.bounds),
                      on_row=lambda r: print(f"  done: {r.label} {r.formulation} {r.status}",
                                             flush=True))
        cmp.header = header
        print(format_table(cmp), flush=True)
        ref = reference_bounds(args.reference).get(header["title"])
        if ref is not None:
            print_reference_gaps(cmp, ref)
        print_certificates(cmp)
        print()
        results.append(to_json(cmp))
    if args.out:
        write_json(args.out, {"args": vars(args), "instances": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
