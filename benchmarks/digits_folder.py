"""Your own images, as a new user has them: scikit-learn's digits as an image folder.

Writes scikit-learn's 1,797 8x8 digits as 32-px greyscale PNG files (white ink on black,
upsampled bilinearly) into ROOT/train/<digit>/ and ROOT/test/<digit>/ (a stratified 80/20
split with a fixed seed: 1,438 training and 359 test images), the layout of
``--dataset imagefolder``; with ``--run RUN_DIR`` it then trains on it with nothing but the
command the README's "Your own images" section shows, as a separate process, and prints
that command, its wall time and the accuracies it reports:

    .venv/bin/python benchmarks/digits_folder.py /tmp/digits32 --run /tmp/digits32-run

The figure it measures: QPM test accuracy with the defaults (the target is 90% or more).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

SIZE = 32
TEST_SHARE = 0.2
SEED = 0


def write_folder(root: Path, size: int = SIZE) -> tuple[int, int]:
    """The digits as ``root/{train,test}/<digit>/<n>.png``; returns (train, test) counts."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(SEED)
    counts = {"train": 0, "test": 0}
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(digits.target == c))
        n_test = int(round(TEST_SHARE * idx.size))
        for rank, i in enumerate(idx):
            split = "test" if rank < n_test else "train"
            pixels = np.clip(digits.images[i] / 16.0 * 255.0, 0, 255).round().astype(np.uint8)
            image = Image.fromarray(pixels, mode="L").resize((size, size), Image.BILINEAR)
            folder = root / split / str(c)
            folder.mkdir(parents=True, exist_ok=True)
            image.save(folder / f"{i:04d}.png")
            counts[split] += 1
    return counts["train"], counts["test"]


def train(root: Path, run_dir: Path) -> int:
    """``qpm train`` on the folder with the README's command, in a process of its own."""
    cmd = [sys.executable, "-m", "qpm", "train", "--dataset", "imagefolder", "--data-root",
           str(root), "--arch", "small-cnn", "--image-size", str(SIZE), "--run-dir",
           str(run_dir)]
    print("$ qpm " + " ".join(cmd[3:]), flush=True)
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
    seconds = time.perf_counter() - start
    sys.stderr.write(done.stderr)
    print(done.stdout, end="")
    if done.returncode:
        print(f"qpm train failed with exit code {done.returncode}")
        return done.returncode
    found = re.search(r"dense accuracy: ([\d.]+)%\s+qpm accuracy: ([\d.]+)%", done.stdout)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"digits as a 32-px image folder: dense {found.group(1)}%, QPM {found.group(2)}% "
          f"test accuracy in {seconds:.0f} s wall time (load average {load:.1f} at the end)")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root", type=Path, help="where to write train/ and test/ (a new folder)")
    p.add_argument("--run", type=Path, metavar="RUN_DIR",
                   help="then run qpm train on it into this run folder and report")
    args = p.parse_args()
    if args.root.exists() and any(args.root.iterdir()):
        p.error(f"{args.root} is not empty; pass a new folder")
    n_train, n_test = write_folder(args.root)
    print(f"wrote {n_train} training and {n_test} test images ({SIZE} px, 10 classes) "
          f"to {args.root}")
    return train(args.root, args.run) if args.run else 0


if __name__ == "__main__":
    sys.exit(main())
