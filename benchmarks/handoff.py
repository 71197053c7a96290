"""Build + hand-off times of the full Pyomo model (no solve): where the seconds go at scale.

    python benchmarks/handoff.py --size cub --solvers highs,scip,gurobi

Times: building the Pyomo model, compiling it to the shared matrix form, and loading that
form into each solver's session. Gurobi's load is timed without optimising, so the
size-limited licence does not stop it.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qpm.assignment.formulations.compile import ModelCompiler  # noqa: E402
from qpm.assignment.formulations.full import build_model  # noqa: E402
from qpm.assignment.synthetic import SIZES, make_instance  # noqa: E402

SESSIONS = {
    "highs": "qpm.assignment.backends.highs:HighsSession",
    "scip": "qpm.assignment.backends.scip:ScipSession",
    "gurobi": "qpm.assignment.backends.gurobi:GurobiSession",
}


def _session(name: str):
    import importlib

    module, _, cls = SESSIONS[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="medium", choices=sorted(SIZES))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--solvers", default="highs,scip,gurobi")
    p.add_argument("--out", metavar="handoff.json")
    args = p.parse_args(argv)

    out: dict = {"size": args.size, "seed": args.seed}
    t = time.perf_counter()
    problem = make_instance(args.size, seed=args.seed)
    out["pairs"] = len(problem.pairs())
    out["instance_s"] = time.perf_counter() - t
    t = time.perf_counter()
    model = build_model(problem)
    out["build_s"] = time.perf_counter() - t
    t = time.perf_counter()
    form = ModelCompiler(model).form
    out["compile_s"] = time.perf_counter() - t
    out.update(cols=form.n_cols, rows=form.n_rows, nnz=int(form.A.nnz))
    print(f"{args.size}: F={problem.n_total} C={problem.n_classes} pairs={out['pairs']} -> "
          f"{form.n_cols} columns, {form.n_rows} rows, {form.A.nnz} nonzeros", flush=True)
    print(f"build {out['build_s']:.1f} s, compile {out['compile_s']:.1f} s", flush=True)
    for name in [s for s in args.solvers.split(",") if s]:
        t = time.perf_counter()
        session = _session(name)(form)
        out[f"load_{name}_s"] = seconds = time.perf_counter() - t
        print(f"load {name}: {seconds:.1f} s (hand-off = compile + load = "
              f"{out['compile_s'] + seconds:.1f} s)", flush=True)
        session.close()
        del session
        gc.collect()
    out["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(f"peak memory {out['peak_rss_gb']:.1f} GB")
    if args.out:
        path = Path(args.out)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(out, indent=2))
        tmp.replace(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
