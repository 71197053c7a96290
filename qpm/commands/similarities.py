"""``qpm similarities FEATURES.npz -o SIMS.npz``: the paper's A and R from saved features."""

from __future__ import annotations

import argparse
import time

from qpm.errors import QPMError


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "similarities",
        help="compute the A and R similarities from saved features",
        description="Read FEATURES.npz (arrays 'features' N x F, 'labels' N, optional 'b' F "
        "and 'class_names' C), compute A and R as in the QPM paper and write the "
        "cached-similarity file that `qpm solve` and `qpm compare` read (class names kept).",
    )
    p.add_argument("features", metavar="FEATURES.npz", help="features and labels of the train set")
    p.add_argument("-o", "--output", required=True, metavar="SIMS.npz", help="file to write")
    p.add_argument(
        "--class-names",
        metavar="FILE",
        help="text file with one class name per line (its length sets the number of "
        "classes; default: the features file's class_names, else class indices)",
    )
    return p


def _read_names(path: str) -> list[str]:
    from qpm.io import check_input_file

    file = check_input_file(path, "Class-names file", "Pass a text file, one name a line.")
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise QPMError(
            f"Cannot read class-names file {file} ({exc}).", "Save it as UTF-8 text."
        ) from None
    names = [line.strip() for line in lines if line.strip()]
    if not names:
        raise QPMError(f"Class-names file {file} is empty.", "Write one class name per line.")
    return names


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from qpm.assignment.cache import load_features, save_similarities
    from qpm.assignment.similarities import compute_similarities
    from qpm.commands._common import check_output

    check_output(args.output, "-o", inputs=(args.features, args.class_names),
                 suffixes=(".npz",))
    start = time.perf_counter()
    data = load_features(args.features)
    names = _read_names(args.class_names) if args.class_names else data.class_names
    A, R = compute_similarities(data.features, data.labels, None if names is None else len(names))
    F, C = A.shape
    if data.b is not None and data.b.shape != (F,):
        raise QPMError(
            f"'b' in {args.features} has shape {data.b.shape}, expected ({F},).",
            "Store one bias value per feature, or leave 'b' out.",
        )
    b = data.b if data.b is not None else np.zeros(F)
    if not np.all(np.isfinite(b)):
        raise QPMError(f"'b' in {args.features} has NaN or infinite values.", "Fix the bias.")
    save_similarities(args.output, A, R, b, class_names=names)
    print(  # the command's result (stdout), not progress
        f"wrote {args.output}: {F} features x {C} classes from {data.features.shape[0]} samples, "
        f"{int(np.count_nonzero(R))} redundant pairs (R > 0), "
        f"b {'from file' if data.b is not None else 'zero'}, "
        f"class names {'kept' if names is not None else 'none'}, "
        f"{time.perf_counter() - start:.1f}s"
    )
    return 0
