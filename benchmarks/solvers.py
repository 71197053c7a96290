"""Compare the solver backends (and formulations) on one instance with the same limits.

    python benchmarks/solvers.py --size small --solvers highs,scip,gurobi,greedy \
        --formulations full,cuts --time-limit 300 --out results.json

Every run goes through :func:`qpm.assignment.solve` (so through the verifier); a backend that
fails or falls back is reported as such and the benchmark goes on.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qpm.assignment.cache import load_similarities, save_similarities  # noqa: E402
from qpm.assignment.solving import solve  # noqa: E402
from qpm.assignment.synthetic import SIZES, make_instance  # noqa: E402
from qpm.errors import QPMError  # noqa: E402


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="small", choices=sorted(SIZES))
    p.add_argument("--instance", help="a SIMS.npz to use instead of a synthetic instance")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--solvers", default="highs,scip,gurobi,greedy")
    p.add_argument("--formulations", default="full,cuts")
    p.add_argument("--preset", default="qpm")
    p.add_argument("--n-features", type=int, help="n (default: the size's)")
    p.add_argument("--per-class", type=int, help="k (default: the size's)")
    p.add_argument("--time-limit", type=float, default=300.0)
    p.add_argument("--mip-gap", type=float, default=1e-4)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--hard-timeout", type=float, default=None,
                   help="kill a run after this many seconds (default: 1.5 x time limit + 120); "
                   "each run is its own process, so a solver that ignores its limit is reported")
    p.add_argument("--jobs", type=int, default=1, help="runs at the same time (default 1)")
    p.add_argument("--memory-limit", type=float, default=None, metavar="GB",
                   help="address-space limit per run (a run over it ends with MemoryError)")
    p.add_argument("--write-instance", metavar="PATH", help="save the instance as SIMS.npz")
    p.add_argument("--out", metavar="results.json")
    return p.parse_args(argv)


def load_problem(args):
    size = SIZES[args.size]
    kw = {
        "n_features": args.n_features or size.n_features,
        "per_class": args.per_class or size.per_class,
        "preset": args.preset,
    }
    if args.instance:
        return load_similarities(args.instance).problem(**kw)
    return make_instance(args.size, seed=args.seed, **kw)


def run_one(problem, solver: str, formulation: str, args) -> dict:
    row = {"solver": solver, "formulation": formulation}
    t0 = time.perf_counter()
    try:
        r = solve(problem, solver=solver, formulation=formulation, time_limit=args.time_limit,
                  mip_gap=args.mip_gap, threads=args.threads)
    except QPMError as exc:
        row.update(status="error", error=str(exc))
        return row
    except Exception as exc:  # a crashing backend is a finding, not the end of the benchmark
        row.update(status="error", error=f"{type(exc).__name__}: {exc}",
                   traceback=traceback.format_exc())
        return row
    row.update(
        status=r.status, objective=r.objective, bound=r.bound, gap=r.gap, verified=r.verified,
        used=r.solver, version=r.solver_version, fallback=r.fallback, message=r.message,
        build=r.times.build, handoff=r.times.handoff, solve=r.times.solve,
        wall=time.perf_counter() - t0,
    )
    return row


def _child(problem, solver, formulation, args, queue) -> None:
    import resource

    if args.memory_limit:
        cap = int(args.memory_limit * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    row = run_one(problem, solver, formulation, args)
    row["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put(row)


def run_isolated(problem, jobs: list[tuple[str, str]], args) -> list[dict]:
    """Each run in its own (forked) process, ``args.jobs`` at a time, killed at the hard
    timeout; rows come back in the order of ``jobs``."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    limit = args.hard_timeout or 1.5 * args.time_limit + 120.0
    pending, running, rows = list(enumerate(jobs)), {}, {}
    while pending or running:
        while pending and len(running) < max(1, args.jobs):
            i, (solver, form) = pending.pop(0)
            q = ctx.Queue()
            proc = ctx.Process(target=_child, args=(problem, solver, form, args, q))
            proc.start()
            running[i] = (proc, q, time.perf_counter(), solver, form)
        time.sleep(0.5)
        for i, (proc, q, t0, solver, form) in list(running.items()):
            row = None
            try:
                row = q.get_nowait()
            except Exception:  # queue.Empty: still running
                pass
            if row is None and proc.is_alive() and time.perf_counter() - t0 < limit:
                continue
            if row is None:
                if proc.is_alive():
                    proc.kill()
                    why = f"killed at the hard timeout ({limit:.0f} s): the solver did not return"
                else:
                    why = f"the run died (exit code {proc.exitcode})"
                row = {"solver": solver, "formulation": form, "status": "error", "error": why,
                       "wall": time.perf_counter() - t0}
            proc.join(timeout=5)
            del running[i]
            row["formulation"] = "-" if solver == "greedy" else form
            rows[i] = row
            print(table([row]).splitlines()[1], flush=True)
    return [rows[i] for i in range(len(jobs))]


def _f(x, spec):
    return "-" if x is None else format(x, spec)


def table(rows: list[dict]) -> str:
    head = ("solver", "form", "status", "objective", "bound", "gap %", "build", "handoff",
            "solve", "wall", "peak MB", "verified", "note")
    lines = [head]
    for r in rows:
        note = r.get("error") or r.get("fallback") or ""
        if r.get("used") and r["used"] != r["solver"]:
            note = f"ran {r['used']}: {note}"
        lines.append((
            r["solver"], r["formulation"], r["status"], _f(r.get("objective"), ".4f"),
            _f(r.get("bound"), ".4f"), _f(None if r.get("gap") is None else 100 * r["gap"], ".4f"),
            _f(r.get("build"), ".1f"), _f(r.get("handoff"), ".1f"), _f(r.get("solve"), ".1f"),
            _f(r.get("wall"), ".1f"), _f(r.get("peak_mb"), ".0f"), str(r.get("verified", False)),
            note[:70],
        ))
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(head))]
    return "\n".join(
        "  ".join(str(v).ljust(w) for v, w in zip(line, widths, strict=True)) for line in lines
    )


def main(argv=None) -> int:
    args = parse(argv)
    problem = load_problem(args)
    if args.write_instance:
        save_similarities(args.write_instance, problem.A, problem.R, problem.b)
    F, C = problem.A.shape
    print(f"instance: size={args.size} seed={args.seed} F={F} C={C} n={problem.n_features} "
          f"k={problem.per_class} pairs={len(problem.pairs())} tau={problem.tau:.4g} "
          f"preset={problem.preset} time limit={args.time_limit} s, "
          f"cpus={os.cpu_count()}", flush=True)
    jobs = []
    for solver in [s for s in args.solvers.split(",") if s]:
        forms = ["-"] if solver == "greedy" else [f for f in args.formulations.split(",") if f]
        jobs.extend((solver, "auto" if form == "-" else form) for form in forms)
    rows = run_isolated(problem, jobs, args)
    print()
    print(table(rows))
    if args.out:
        out = Path(args.out)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps({"args": vars(args), "F": F, "C": C, "rows": rows}, indent=2))
        tmp.replace(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
