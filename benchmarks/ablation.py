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
   (``--clique-size`` repeats it with larger cliques), and where that LP point finds its
   value: how many features it spreads over, its top-k part and the penalty it pays, next to
   the best known 0/1 selection's;
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


def root_bound(problem: AssignmentProblem, seconds: float, cliques: bool, start,
               clique_size: int | None = None) -> tuple[float, float, int, np.ndarray | None]:
    """(root LP bound, seconds, LP solves, the last root LP point) of the cut loop's root
    stage; ``clique_size`` overrides the separator's largest clique."""
    saved = cutmodel.CLIQUES_PER_ROUND, cutmodel.CLIQUE_SIZE
    cutmodel.CLIQUES_PER_ROUND = saved[0] if cliques else 0
    cutmodel.CLIQUE_SIZE = clique_size or saved[1]
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
        return cs.bound, time.perf_counter() - t0, len(cs.lp_seconds), cs.last_x
    finally:
        cutmodel.CLIQUES_PER_ROUND, cutmodel.CLIQUE_SIZE = saved


def parts(problem: AssignmentProblem, s: np.ndarray, top_k: float) -> str:
    """How a (fractional) selection ``s`` spreads and what it earns and pays: its top-k part
    ``top_k`` (scale * sum of class values), b . s and the penalty (the rest of the bound)."""
    sup = s[s > 1e-6]
    hist = np.histogram(sup, bins=[0, 0.25, 0.5, 0.75, 0.99, 1.01])[0]
    return (f"{sup.size} features with s > 0 (s in (0,.25] {hist[0]}, (.25,.5] {hist[1]}, "
            f"(.5,.75] {hist[2]}, (.75,.99] {hist[3]}, ~1 {hist[4]}); top-k part "
            f"{top_k:.4f}, b.s {float(problem.bias @ s):.4f}")


def largest_clique(problem: AssignmentProblem, s: np.ndarray, seeds: int = 100
                   ) -> tuple[int, float]:
    """(members, s-sum) of the largest clique of the redundancy graph that greedy growth
    (by s) finds inside the support of ``s``, from each of its ``seeds`` largest entries."""
    sup = np.flatnonzero(s > 1e-6)
    p = problem.pairs()
    pos = np.full(problem.n_total, -1)
    pos[sup] = np.arange(sup.size)
    keep = (pos[p.i] >= 0) & (pos[p.j] >= 0)
    adj = np.zeros((sup.size, sup.size), dtype=bool)
    adj[pos[p.i[keep]], pos[p.j[keep]]] = True
    adj |= adj.T
    sv = s[sup]
    best = (0, 0.0)
    for v in np.argsort(-sv, kind="stable")[:seeds]:
        members, cand = [int(v)], adj[v].copy()
        while cand.any():
            u = int(np.flatnonzero(cand)[np.argmax(sv[cand])])
            members.append(u)
            cand &= adj[u]
        best = max(best, (len(members), float(sv[members].sum())))
    return best


def explain_root(problem: AssignmentProblem, x: np.ndarray, bound: float, h) -> None:
    """Where the root LP point finds its value, next to the best known 0/1 selection."""
    F, C = problem.n_total, problem.n_classes
    s = x[:F]
    top_k = problem.scale * float(x[F:F + C].sum())
    print(f"     LP point: {parts(problem, s, top_k)}, penalty "
          f"{top_k + float(problem.bias @ s) - bound:.4f}")
    size, sigma = largest_clique(problem, s)
    print(f"     largest clique found in its support: {size} members, s-sum {sigma:.2f}")
    mask = h.mask
    p = problem.pairs()
    both = mask[p.i] & mask[p.j]
    top_h = problem.scale * float((problem.A * h.matrix).sum())
    print(f"     best 0/1:  {parts(problem, mask.astype(np.float64), top_h)}, penalty "
          f"{problem.redundancy_weight * float(p.weight[both].sum()):.4f} "
          f"({int(both.sum())} penalised pairs)")


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
    p.add_argument("--clique-size", type=int, action="append", default=[],
                   help="also run row 3 with cliques of up to this many members "
                        f"(default {cutmodel.CLIQUE_SIZE}); repeatable")
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
    w = problem.pairs().weight
    if w.size:
        F = problem.n_total
        q = np.quantile(w, [0.1, 0.5, 0.9])
        print(f"  redundancy graph: density {w.size / (F * (F - 1) / 2):.3f}, pair weights "
              f"{q[0]:.2f} / {q[1]:.2f} / {q[2]:.2f} (10/50/90% quantiles)")
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
    b1, s1, n1, _ = root_bound(free, args.time_limit, True, hf)
    line("1. top-k cuts only (no redundancy term)", b1,
         f"its own best objective {hf.objective:.4f}: top-k gap "
         f"{100 * (b1 - hf.objective) / abs(hf.objective):.3f} % ({n1} LPs, {s1:.0f} s)")
    b2, s2, n2, _ = root_bound(problem, args.time_limit, False, h)
    line("2. + McCormick pairs (lazy), no cliques", b2, f"{n2} LPs, {s2:.0f} s")
    for size in [cutmodel.CLIQUE_SIZE, *args.clique_size]:
        b3, s3, n3, x3 = root_bound(problem, args.time_limit, True, h, size)
        line(f"3. + cliques (<= {size} members), {args.time_limit:.0f} s", b3,
             f"{n3} LPs, {s3:.0f} s")
        if x3 is not None:
            explain_root(problem, x3, b3, h)
    cost, colliding = uniqueness_cost(problem, h.selected, h.objective)
    print(f"  4. uniqueness at the best known selection: costs {cost:.4f} "
          f"({100 * cost / abs(best):.3f} %); {colliding} classes share their top-k set")
    return 0


if __name__ == "__main__":
    sys.exit(main())
