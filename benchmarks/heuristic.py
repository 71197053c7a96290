"""Speed and quality of the numpy side of the assignment on the synthetic sizes.

Usage: OMP_NUM_THREADS=1 python benchmarks/heuristic.py [--sizes tiny small medium cub]
       [--restarts 1 20] [--presets qpm unbalanced] [--seed 0]

Prints, per size: instance build time (features -> A, R -> default tau -> pairs), and per
preset and restart count the heuristic's objective, its wall time and the verifier's verdict.
"""

from __future__ import annotations

import argparse
import time

from qpm.assignment.heuristic import heuristic_solution
from qpm.assignment.problem import AssignmentProblem
from qpm.assignment.redundancy import default_tau
from qpm.assignment.similarities import compute_similarities
from qpm.assignment.synthetic import SIZES, make_bias, make_features
from qpm.assignment.verifier import verify


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["tiny", "small", "medium", "cub"])
    parser.add_argument("--restarts", nargs="+", type=int, default=[1, 20])
    parser.add_argument("--presets", nargs="+", default=["qpm", "unbalanced"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for name in args.sizes:
        s = SIZES[name]
        t0 = time.perf_counter()
        X, y = make_features(s.n_total, s.n_classes, seed=args.seed)
        t1 = time.perf_counter()
        A, R = compute_similarities(X, y, s.n_classes)
        t2 = time.perf_counter()
        tau = default_tau(R, s.n_features)
        t3 = time.perf_counter()
        print(
            f"{name}: F={s.n_total} C={s.n_classes} n={s.n_features} k={s.per_class} "
            f"N={X.shape[0]} | features {t1 - t0:.2f}s similarities {t2 - t1:.2f}s "
            f"default_tau {t3 - t2:.2f}s (tau={tau:.4f})"
        )
        for preset in args.presets:
            p = AssignmentProblem(A, R, make_bias(s.n_total, args.seed), s.n_features,
                                  s.per_class, tau=tau, preset=preset)
            p.pairs()
            for restarts in args.restarts:
                t = time.perf_counter()
                h = heuristic_solution(p, restarts=restarts, seed=args.seed)
                dt = time.perf_counter() - t
                ok = verify(p, h.selected, h.matrix, h.objective).ok
                print(f"  {preset:<14} restarts={restarts:<3} objective={h.objective:.4f} "
                      f"time={dt:.2f}s verified={ok} pairs={len(p.pairs())}")


if __name__ == "__main__":
    main()
