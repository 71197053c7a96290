"""`qpm similarities` against a per-class loop of the same Pearson formula, whole processes.

    OMP_NUM_THREADS=1 python benchmarks/similarities.py [--samples 6000 --features 2048 \
        --classes 200 --repeats 3]

Writes synthetic CUB-size features (``make_features``, float32) to a temporary FEATURES.npz,
then times, each as its own process from start to exit: ``python -m qpm similarities`` (median
of ``--repeats`` runs) and this file's ``--loop`` worker, which reads the same file, computes
each class's column of A with the reference implementation's per-class Pearson loop (centre
the features and the class indicator, one matrix-vector product, divide by N and both
standard deviations) and then normalises A, computes R and writes SIMS.npz as qpm does.
It prints both times, the ratio and the largest difference between the two outputs.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def pearson_loop(X: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """A (F, C) one class at a time, the way the reference implementation computes it:
    centre the features and the class indicator, one matrix-vector product, divide by N and
    by both standard deviations (features in their own dtype, as loaded)."""
    A = np.zeros((X.shape[1], n_classes))
    for c in range(n_classes):
        y = labels == c
        yc = y - y.mean()
        xc = X - X.mean(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            r = (xc.T @ yc) / yc.shape[0] / (xc.std(axis=0) * yc.std())
        A[:, c] = np.nan_to_num(r)  # a constant feature: 0, as qpm defines it
    return A


def loop_worker(features: str, out: str) -> None:
    from qpm.assignment.cache import save_similarities
    from qpm.assignment.similarities import row_cosine_similarity

    with np.load(features, allow_pickle=False) as data:
        X, y = data["features"], data["labels"]
    A = pearson_loop(X, y, int(y.max()) + 1)
    A /= np.abs(A).max()
    save_similarities(out, A, row_cosine_similarity(A), np.zeros(A.shape[0]))


def _timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=6000)
    p.add_argument("--features", type=int, default=2048)
    p.add_argument("--classes", type=int, default=200)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--loop", nargs=2, metavar=("FEATURES.npz", "SIMS.npz"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.loop:
        loop_worker(*args.loop)
        return 0

    import os

    from qpm.assignment.synthetic import make_features

    X, y = make_features(args.features, args.classes, args.samples // args.classes, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        feats, ours, loop = (str(Path(tmp) / n) for n in ("f.npz", "ours.npz", "loop.npz"))
        np.savez(feats, features=X, labels=y)
        print(f"N={X.shape[0]} F={X.shape[1]} C={args.classes}, float32 features, "
              f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
              f"load {os.getloadavg()[0]:.2f}", flush=True)
        qpm_cmd = [sys.executable, "-m", "qpm", "similarities", feats, "-o", ours]
        times = [_timed(qpm_cmd) for _ in range(max(1, args.repeats))]
        t_loop = _timed([sys.executable, __file__, "--loop", feats, loop])
        with np.load(ours) as a, np.load(loop) as b:
            dA, dR = np.abs(a["A"] - b["A"]).max(), np.abs(a["R"] - b["R"]).max()
    med = statistics.median(times)
    print(f"qpm similarities, whole process: median {med:.3f} s of "
          f"{', '.join(f'{t:.3f}' for t in times)}")
    print(f"per-class Pearson loop, whole process: {t_loop:.2f} s")
    print(f"ratio: {t_loop / med:.0f}x   (max |dA| {dA:.1e}, max |dR| {dR:.1e})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
