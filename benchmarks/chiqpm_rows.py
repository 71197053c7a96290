"""Which exact linear form of "forced pair shares k-1 features" the full model solves fastest.

Usage: OMP_NUM_THREADS=1 python benchmarks/chiqpm_rows.py [--sizes tiny 128,20,20,5]
       [--seeds 0 1 2] [--families default groups] [--solvers highs scip] [--time-limit 120]
       [--rho 0.5] [--instance SIMS.npz --n 50 --k 5] [--no-warm-start]

A size is a name of ``qpm.assignment.synthetic.SIZES`` or F,C,n,k.

Forms, per forced pair (c, d), F features:

* ``difference`` (what ``qpm.assignment.formulations.full.add_forced_pairs`` builds):
  continuous e_i >= w_ic - w_id and sum_i e_i <= 1, i.e. c has at most one feature d lacks
  (shares >= k - 1). F columns, F + 1 rows; the pair's "shares <= k - 1" comes from the solve
  loop's lazy uniqueness rows (added when the pair comes out identical).
* ``mccormick``: continuous u_i with u_i <= w_ic, u_i <= w_id, u_i >= w_ic + w_id - 1 and
  sum_i u_i = k - 1. F columns, 3F + 1 rows; exact on its own (it also keeps the pair
  distinct); Gurobi would take the product natively.
* ``difference+unique``: ``difference`` plus the pair's uniqueness rows up front (2F columns,
  2F + 2 rows).

Every answer goes through the verifier. Prints one row per instance, solver and form: status,
objective, gap, loop rounds, seconds (measured under whatever load the machine has).
"""

from __future__ import annotations

import argparse
import time
from contextlib import contextmanager

import numpy as np
import pyomo.environ as pyo

from qpm.assignment.formulations import full
from qpm.assignment.solving import solve


def _mccormick(m, problem, pairs) -> None:
    F, k = problem.n_total, problem.per_class
    m.forced = pyo.Block()
    m.forced_pairs = []  # set_start must not set these blocks as the built-in form
    m.forced_product = [(int(c), int(d)) for c, d in np.asarray(pairs).reshape(-1, 2).tolist()]
    for c, d in m.forced_product:
        blk = pyo.Block()
        m.forced.add_component(f"pair_{c}_{d}", blk)
        blk.u = pyo.Var(m.F, bounds=(0.0, 1.0))
        rows = []
        for i, u in enumerate(blk.u.values()):
            wc, wd = m.w[i, c], m.w[i, d]
            rows += [full._row_le([u, full._neg(wc)], 0.0), full._row_le([u, full._neg(wd)], 0.0),
                     full._row_ge(-1.0, [u, full._neg(wc), full._neg(wd)])]
        blk.product = pyo.Constraint(range(len(rows)), rule=lambda b, r, rows=rows: rows[r])
        blk.share = pyo.Constraint(expr=full._linear([1.0] * F, list(blk.u.values())) == k - 1)


@contextmanager
def form(name: str):
    """Patch the full model's forced-pair rows (and their warm-start values) to ``name``."""
    if name == "difference":
        yield
        return
    build, start = full.add_forced_pairs, full.set_start

    def set_start(m, problem, selected, matrix):
        start(m, problem, selected, matrix)
        W = np.asarray(matrix, dtype=bool)
        for c, d in getattr(m, "forced_product", ()):
            both = W[:, c] & W[:, d]
            for i, v in m.forced.component(f"pair_{c}_{d}").u.items():
                v.set_value(float(both[i]), skip_validation=True)

    def unique(m, problem, pairs):
        build(m, problem, pairs)
        full.add_uniqueness(m, problem, m.forced_pairs)

    full.add_forced_pairs = _mccormick if name == "mccormick" else unique
    full.set_start = set_start
    try:
        yield
    finally:
        full.add_forced_pairs, full.set_start = build, start


FORMS = ("difference", "mccormick", "difference+unique")


def instances(args):
    if args.instance:
        from qpm.assignment.cache import load_similarities

        sims = load_similarities(args.instance)
        yield args.instance, sims.problem(n_features=args.n, per_class=args.k,
                                          preset="chiqpm", rho=args.rho)
        return
    for size in args.sizes:
        for family in args.families:
            for seed in args.seeds:
                yield f"{size}/{family}/{seed}", _instance(size, seed, family, args.rho)


def _instance(size: str, seed: int, family: str, rho: float):
    from qpm.assignment.problem import AssignmentProblem
    from qpm.assignment.similarities import compute_similarities
    from qpm.assignment.synthetic import make_bias, make_features, make_instance

    if "," not in size:
        return make_instance(size, seed, family, preset="chiqpm", rho=rho)
    F, C, n, k = (int(x) for x in size.split(","))
    X, y = make_features(F, C, seed=seed, family=family)
    A, R = compute_similarities(X, y, C)
    return AssignmentProblem(A, R, make_bias(F, seed), n, k, preset="chiqpm", rho=rho)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["tiny"])
    parser.add_argument("--families", nargs="+", default=["default", "groups"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--solvers", nargs="+", default=["highs", "scip"])
    parser.add_argument("--forms", nargs="+", default=list(FORMS), choices=FORMS)
    parser.add_argument("--time-limit", type=float, default=120.0)
    parser.add_argument("--rho", type=float, default=0.5)
    parser.add_argument("--instance", help="a SIMS.npz instead of synthetic instances")
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--no-warm-start", action="store_true",
                        help="skip the heuristic start (it takes up to 10%% of the limit)")
    args = parser.parse_args()
    print(f"{'instance':<26} {'solver':<6} {'form':<18} {'status':<10} {'objective':>12} "
          f"{'gap %':>8} {'solve s':>8} {'total s':>8}  note")
    for label, problem in instances(args):
        for solver in args.solvers:
            for name in args.forms:
                with form(name):
                    t0 = time.perf_counter()
                    r = solve(problem, solver=solver, time_limit=args.time_limit, mip_gap=1e-4,
                              formulation="full", strict_solver=True, threads=1,
                              warm_start=not args.no_warm_start)
                    dt = time.perf_counter() - t0
                gap = "-" if r.gap is None else f"{100 * r.gap:.3f}"
                obj = "-" if r.objective is None else f"{r.objective:.4f}"
                print(f"{label:<26} {solver:<6} {name:<18} {r.status:<10} {obj:>12} {gap:>8} "
                      f"{r.times.solve:>8.2f} {dt:>8.2f}  {r.message[:40]}", flush=True)


if __name__ == "__main__":
    main()
