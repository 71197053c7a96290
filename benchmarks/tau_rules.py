"""tau and the penalised pairs under each tau rule, with the seconds each rule takes.

Usage: OMP_NUM_THREADS=1 python benchmarks/tau_rules.py [SIMS.npz ...] [--sizes small cub]
       [--generated 0 1] [--n-features 50]

Inputs: cached similarity files (e.g. a run's similarities.npz), the synthetic sizes of
benchmarks/solvers.py (same seed, same instance), and ``--generated SEED``: the features
issue 10 measured the reference on (N=3000, F=256, C=50; the reference implementation
penalises 1503 pairs for seed 0 and 1492 for seed 1 at n=50).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from qpm.assignment.cache import load_similarities
from qpm.assignment.redundancy import TAU_RULES, default_tau, redundancy_pairs
from qpm.assignment.similarities import compute_similarities
from qpm.assignment.synthetic import SIZES, make_features


def generated_R(seed: int, N: int = 3000, F: int = 256, C: int = 50) -> np.ndarray:
    rng = np.random.default_rng(seed)
    labels = np.arange(N) % C
    pref = rng.random((F, C)) < 0.1
    X = rng.gamma(1, 1, (N, F)) + 2 * pref[:, labels].T * rng.gamma(2, 1, (N, F))
    return compute_similarities(X, labels)[1]


def report(name: str, R: np.ndarray, n: int) -> None:
    for rule in sorted(TAU_RULES):
        t = time.perf_counter()
        tau = default_tau(R, n, rule)
        dt = time.perf_counter() - t
        pairs = len(redundancy_pairs(R, tau))
        print(f"{name:<40} F={R.shape[0]:<5} n={n:<3} {rule:<6} tau={tau:.4f} "
              f"pairs={pairs:<7} {dt:.2f}s", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sims", nargs="*", help="SIMS.npz files")
    p.add_argument("--sizes", nargs="*", default=[], choices=sorted(SIZES))
    p.add_argument("--generated", nargs="*", type=int, default=[], metavar="SEED")
    p.add_argument("--n-features", type=int, default=None, help="n (default: 50, or the size's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic sizes")
    args = p.parse_args()
    for path in args.sims:
        report(path, load_similarities(path).R, args.n_features or 50)
    for seed in args.generated:
        report(f"generated seed {seed}", generated_R(seed), args.n_features or 50)
    for name in args.sizes:
        s = SIZES[name]
        X, y = make_features(s.n_total, s.n_classes, seed=args.seed)
        R = compute_similarities(X, y, s.n_classes)[1]
        report(f"synthetic {name} seed {args.seed}", R, args.n_features or s.n_features)


if __name__ == "__main__":
    main()
