"""Does `qpm predict` on image FILES reproduce a run's recorded test accuracy?

Writes the run's test images as PNG files (the digit sets) or uses the dataset's test files,
runs `qpm predict` on them and compares the accuracy of its CSV with metrics.json:

    .venv/bin/python benchmarks/predict_check.py runs/mnist-5k/small-cnn/0 [--model-type qpm]
                                                 [--variant NAME]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir")
    p.add_argument("--model-type", default="qpm")
    p.add_argument("--variant", help="which variant (default: the most recently trained)")
    p.add_argument("--device", default="auto")
    args = p.parse_args()

    import numpy as np
    from PIL import Image

    from qpm import run_folder as rf
    from qpm.cli import main as qpm_main
    from qpm.data import build_data

    run = rf.open_run(args.run_dir)
    model = run.find(args.model_type, args.variant)
    cfg = run.config_of(model)
    test = build_data(cfg.dataset, cfg.data_root, cfg.image_size, cfg.crop_gt).test
    labels = np.asarray(test.split.labels)
    with tempfile.TemporaryDirectory() as tmp:
        if test.split.images is not None:  # in-memory digits: write them out losslessly
            paths = [Path(tmp) / f"{i:05d}.png" for i in range(len(labels))]
            for img, path in zip(test.split.images, paths, strict=True):
                Image.fromarray(img.permute(1, 2, 0).squeeze(-1).numpy()).save(path)
        else:
            paths = list(test.split.paths)
        out = Path(tmp) / "predictions.csv"
        rc = qpm_main(["predict", str(run.path), *map(str, paths), "--out", str(out),
                       "--model-type", args.model_type, "--variant", model.label,
                       "--device", args.device])
        if rc:
            return rc
        by_path = {r["path"]: int(r["class_index"]) for r in csv.DictReader(out.open())}
    pred = np.array([by_path[str(p)] for p in paths])
    acc = 100.0 * float(np.mean(pred == labels))
    metrics = json.loads((model.folder / rf.METRICS).read_text())
    recorded = metrics[args.model_type]["accuracy"]
    print(f"{args.model_type}: qpm predict on {len(paths)} test image files: {acc:.2f}% "
          f"correct; metrics.json: {recorded:.2f}%")
    return 0 if abs(acc - recorded) < 1e-9 else 1


if __name__ == "__main__":
    sys.exit(main())
