"""Compare the solver backends (and formulations) on generated instances: a loop over sizes
around :func:`qpm.assignment.compare.compare` (the code behind ``qpm compare``).

    python benchmarks/solvers.py --size small,medium --solvers highs,scip,gurobi,greedy \
        --formulations full,cuts --time-limit 300 --out results.json

Every run goes through :func:`qpm.assignment.solve` (so through the verifier) in its own
process with the time limit and a memory limit; a backend that crashes, hangs, is missing or
falls back is reported as such and the benchmark goes on. ``--instance SIMS.npz`` runs a
cached file instead (n, k and preset from the file's record unless given, as qpm compare).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qpm.assignment.cache import load_similarities, save_similarities  # noqa: E402
from qpm.assignment.compare import Limits, compare  # noqa: E402
from qpm.assignment.compare_report import format_table, to_json  # noqa: E402
from qpm.assignment.synthetic import SIZES, make_instance  # noqa: E402
from qpm.commands.compare import describe, memory_default  # noqa: E402
from qpm.io import write_json  # noqa: E402


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="small",
                   help=f"comma-separated sizes of {', '.join(SIZES)} (default small)")
    p.add_argument("--instance", help="a SIMS.npz to use instead of generated instances")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--solvers", default="highs,scip,gurobi,greedy")
    p.add_argument("--formulations", default="full,cuts")
    p.add_argument("--preset", default=None, help="default: qpm (or the file's record)")
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


def instances(args):
    """(name, problem) for each size, or the one file."""
    if args.instance:
        sims = load_similarities(args.instance)
        rec = sims.settings
        yield Path(args.instance).name, sims.problem(
            n_features=args.n_features or rec.get("n_features", 50),
            per_class=args.per_class or rec.get("per_class", 5),
            preset=args.preset or rec.get("preset", "qpm"))
        return
    for size in [s for s in args.size.split(",") if s]:
        kw = {"preset": args.preset or "qpm"}
        if args.n_features:
            kw["n_features"] = args.n_features
        if args.per_class:
            kw["per_class"] = args.per_class
        yield f"size={size} seed={args.seed}", make_instance(size, seed=args.seed, **kw)


def main(argv=None) -> int:
    args = parse(argv)
    limits = Limits(time_limit=args.time_limit, mip_gap=args.mip_gap, threads=args.threads,
                    memory_gb=args.memory_limit or memory_default(), grace=120.0,
                    hard_timeout=args.hard_timeout)
    runs = []
    for solver in [s for s in args.solvers.split(",") if s]:
        forms = ["auto"] if solver == "greedy" else [f for f in args.formulations.split(",") if f]
        runs.extend((solver, form) for form in forms)
    results = []
    for name, problem in instances(args):
        if args.write_instance:
            save_similarities(args.write_instance, problem.A, problem.R, problem.b,
                              settings={"n_features": problem.n_features,
                                        "per_class": problem.per_class,
                                        "preset": problem.preset, "tau_rule": "tight"})
        header = describe(name, problem, {}, limits)
        print(f"{header['title']}\n  {header['limits']}", flush=True)
        cmp = compare(problem, runs, limits, repeat=args.repeat, jobs=args.jobs,
                      on_row=lambda r: print(f"  done: {r.label} {r.formulation} {r.status}",
                                             flush=True))
        cmp.header = header
        print(format_table(cmp), flush=True)
        print()
        results.append(to_json(cmp))
    if args.out:
        write_json(args.out, {"args": vars(args), "instances": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
