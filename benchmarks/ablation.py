"""What limits the cut formulation's bound: the root LP with its parts switched on one by one.

    OMP_NUM_THREADS=1 python benchmarks/ablation.py --size imagenet --family default \
        --time-limit 300 [--incumbent 86.29]

On one generated instance (or ``--instance SIMS.npz``) it prints, each as a bound and how far
it lies above the best known objective (the heuristic's, a verified solve's, or
``--incumbent``):

1. top-k cuts only, i.e. the problem without the redundancy term (preset ``no-redundancy``):
   its root LP bound next to its own optimum, so the gap of the top-k relaxation alone;
2. + the McCormick rows of the penalised pairs (added lazily), no cliques;
3. + clique inequalities, the root loop as ``qpm solve`` runs it, for ``--time-limit`` s;
4. uniqueness: at the best known selection, the value of every class's own top-k set against
   the best assignment with distinct sets (what "no two classes share a set" costs there).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qpm.assignment.backends import get_backend  # noqa: E402
from qpm.assignment.cache import load_similarities  # noqa: E402
from qpm.assignment.formulations import SolveOptions  # noqa: E402
from qpm.assignment.formulations.cuts import loop as cutmodel  # noqa: E402
from qpm.assignment.heuristic import SwapSearch, heuristic_solution  # noqa: E402
from qpm.assignment.problem import AssignmentProblem  # noqa: E402
from qpm.assignment.synthetic import FAMILIES, SIZES, make_instance  # noqa: E402
from qpm.assignment.verifier import verify  # noqa: E402


def root_bound(problem: AssignmentProblem, seconds: float, cliques: bool, start
               ) -> tuple[float, float, int]:
    """(root LP bound, seconds, LP solves) of the cut loop's root stage."""
    saved = cutmodel.CLIQUES_PER_ROUND
    cutmodel.CLIQUES_PER_ROUND = saved if cliques else 0
    try:
        opts = SolveOptions(time_limit=seconds, threads=1, start=start)
        opts.deadline = time.perf_counter() + seconds
        cs = cutmodel.CutSolver(problem, opts, get_backend("highs"))
        mask = np.zeros(problem.n_total, dtype=bool)
        mask[start.selected] = True
        cs.best.offer(problem, mask, start.matrix)
        cs.build()
        t0 = time.perf_counter()
        cs.root(opts.deadline, None)
        return cs.bound, time.perf_counter() - t0, len(cs.lp_seconds)
    finally:
        cutmodel.CLIQUES_PER_ROUND = saved


def uniqueness_cost(problem: AssignmentProblem, selected: np.ndarray, value: float
                    ) -> tuple[float, int]:
    """(own top-k value minus the unique assignment's value, classes that collide)."""
    surrogate = SwapSearch(problem).search.value(np.asarray(selected))
    AS = problem.A[selected]
    top = np.sort(np.argsort(-AS, axis=0, kind="stable")[: problem.per_class], axis=0).T
    _, counts = np.unique(top, axis=0, return_counts=True)
    return surrogate - value, int(counts[counts > 1].sum())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="cub", choices=sorted(SIZES))
    p.add_argument("--family", default="default", choices=FAMILIES)
    p.add_argument("--instance", help="a SIMS.npz instead of a generated instance")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--time-limit", type=float, default=300.0, help="seconds for row 3")
    p.add_argument("--incumbent", type=float, help="best known objective, if better")
    args = p.parse_args(argv)
    if args.instance:
        problem = load_similarities(args.instance).problem(n_features=50, per_class=5)
        name = args.instance
    else:
        problem = make_instance(args.size, seed=args.seed, family=args.family)
        name = f"family={args.family} size={args.size} seed={args.seed}"
    print(f"{name}: F={problem.n_total} C={problem.n_classes} n={problem.n_features} "
          f"k={problem.per_class} tau={problem.tau:.4g} ({len(problem.pairs())} pairs, "
          f"{problem.tau_rule} rule)", flush=True)
    h = heuristic_solution(problem, restarts=1000, patience=10, time_limit=60)
    assert verify(problem, h.selected, h.matrix, h.objective).ok
    best = max(h.objective, args.incumbent or -math.inf)

    def line(label: str, bound: float, note: str) -> None:
        print(f"  {label:<44} {bound:10.4f}  {100 * (bound - best) / abs(best):7.3f} %  {note}",
              flush=True)

    print(f"  best known objective {best:.4f} (heuristic {h.objective:.4f}, verified)")
    print(f"  {'root relaxation':<44} {'LP bound':>10}  {'above':>9}")
    free = AssignmentProblem(A=problem.A, R=problem.R, b=problem.b,
                             n_features=problem.n_features, per_class=problem.per_class,
                             tau=problem.tau, preset="no-redundancy")
    hf = heuristic_solution(free, restarts=1000, patience=10, time_limit=30)
    b1, s1, n1 = root_bound(free, args.time_limit, True, hf)
    line("1. top-k cuts only (no redundancy term)", b1,
         f"its own best objective {hf.objective:.4f}: top-k gap "
         f"{100 * (b1 - hf.objective) / abs(hf.objective):.3f} % ({n1} LPs, {s1:.0f} s)")
    b2, s2, n2 = root_bound(problem, args.time_limit, False, h)
    line("2. + McCormick pairs (lazy), no cliques", b2, f"{n2} LPs, {s2:.0f} s")
    b3, s3, n3 = root_bound(problem, args.time_limit, True, h)
    line(f"3. + cliques, {args.time_limit:.0f} s", b3, f"{n3} LPs, {s3:.0f} s")
    cost, colliding = uniqueness_cost(problem, h.selected, h.objective)
    print(f"  4. uniqueness at the best known selection: costs {cost:.4f} "
          f"({100 * cost / abs(best):.3f} %); {colliding} classes share their top-k set")
    return 0


if __name__ == "__main__":
    sys.exit(main())
