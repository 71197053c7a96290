"""What the reference's training quirks change on a run: test accuracy of each model type.

    .venv/bin/python benchmarks/reference_quirks.py [--out runs/quirks] [--threads 1]
                                                    [-- extra qpm train flags]

Trains (or, when finished, only reads) two run folders on the offline default (mnist-5k):
  OUT/default          qpm, sldd and qsenn as `qpm train` trains them, then sldd and qsenn again
                       with --reference-quirks (its own variants, on the same dense model);
  OUT/keep-last-batch  qpm, sldd and qsenn with every training loader keeping its last, smaller
                       batch (dense training included), as the reference's loader does;
and prints the dense and final test accuracy of each. Each `qpm train` runs in its own process
with ``--threads`` torch threads (the figures in the README: one thread, seed 0).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

RUNS = (("default", "qpm", False), ("default", "sldd", False), ("default", "qsenn", False),
        ("default", "sldd", True), ("default", "qsenn", True),
        ("keep-last-batch", "qpm", False), ("keep-last-batch", "sldd", False),
        ("keep-last-batch", "qsenn", False))


def train(folder: Path, model_type: str, quirks: bool, extra: list[str], threads: int) -> None:
    keep_last = folder.name == "keep-last-batch"
    cmd = [sys.executable, __file__, "--worker", "keep-last" if keep_last else "plain", "--",
           "train", "--model-type", model_type, "--run-dir", str(folder), *extra]
    if quirks:
        cmd.append("--reference-quirks")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    subprocess.run(cmd, check=True, env=env)


def worker(mode: str, argv: list[str]) -> int:
    """``qpm`` in this process; ``keep-last``: no training loader drops its last batch."""
    if mode == "keep-last":
        from dataclasses import replace

        import qpm.pipeline.training as training

        plain = training.train_loader
        training.train_loader = lambda data, s: plain(data, replace(s, drop_last=False))
    from qpm.cli import main as qpm_main

    return qpm_main(argv)


def accuracy(folder: Path, model_type: str, quirks: bool) -> str:
    """The final test accuracy of the one variant of ``model_type`` (with or without quirks)."""
    found = [v for v in sorted((folder / "variants").glob(f"{model_type}-*"))
             if v.name.endswith("-reference-quirks") == quirks]
    if len(found) != 1 or not (found[0] / "metrics.json").is_file():
        return "n/a"
    value = json.loads((found[0] / "metrics.json").read_text())[model_type]["accuracy"]
    return f"{value:.2f}%"


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        return worker(sys.argv[2], sys.argv[4:])
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/quirks", help="where the two run folders go")
    p.add_argument("--threads", type=int, default=1, help="torch threads per qpm train")
    p.add_argument("extra", nargs="*", help="more qpm train flags (after --)")
    args = p.parse_args()
    out = Path(args.out)
    for name, model_type, quirks in RUNS:
        train(out / name, model_type, quirks, args.extra, args.threads)
    print(f"{'run folder':<16} {'model':<24} {'dense':>8} {'final':>8}")
    for name, model_type, quirks in RUNS:
        dense = json.loads((out / name / "metrics.json").read_text())["dense"]["accuracy"]
        label = model_type + (" --reference-quirks" if quirks else "")
        final = accuracy(out / name, model_type, quirks)
        print(f"{name:<16} {label:<24} {dense:>7.2f}% {final:>8}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
