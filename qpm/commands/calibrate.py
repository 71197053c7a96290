"""``qpm calibrate RUN_DIR``: split-conformal calibration of a trained model on part of the
test set, stored next to its model file for ``qpm predict --coverage`` and ``qpm demo``."""

from __future__ import annotations

import argparse

from qpm import logs
from qpm.commands._common import (
    add_calibration_arguments,
    add_run_folder_arguments,
    add_variant_argument,
    check_run_folder_arguments,
    choose_model,
)
from qpm.run_folder import holding_lock

log = logs.get("calibrate")

# The layer input must give the logits back (values @ W.T + bias); beyond this relative error
# the hierarchical score would sort other activations than the model adds up.
MISMATCH_LIMIT = 1e-3


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "calibrate",
        help="conformal calibration on part of the test set (for predict --coverage, demo)",
        description="Run a trained model over the test set, split it into calibration and "
        "evaluation images (they never overlap) and calibrate every conformal method that "
        "works with the model (hierarchical: CHiQPM's score, for binary layers with k "
        "features per class; thr; aps) at --coverage. Stores the split, the thresholds and "
        "the calibration images' outputs next to the model file (calibration-TYPE.json "
        "and .npz), and prints each method's coverage and set size on the evaluation images.",
    )
    add_run_folder_arguments(p)
    p.add_argument("--model-type", metavar="NAME",
                   help="which model: qpm, chiqpm, sldd, qsenn or dense (default: the type "
                   "of --variant, else the most recently trained sparse model)")
    add_variant_argument(p)
    p.add_argument("--coverage", type=float, default=0.9,
                   help="target coverage 1 - alpha, strictly between 0 and 1")
    add_calibration_arguments(p)
    return p


@holding_lock
def run(args: argparse.Namespace) -> int:
    import numpy as np

    from qpm import run_folder as rf
    from qpm.conformal import Bound, evaluate, format_report, make_split, methods_for
    from qpm.conformal.quantile import check_coverage
    from qpm.conformal.splits import reference_split
    from qpm.data import build_data
    from qpm.errors import QPMError
    from qpm.inference import load
    from qpm.inference.conformal import dataset_outputs
    from qpm.text import printable

    check_run_folder_arguments(args)
    try:
        coverage = check_coverage(args.coverage)
    except ValueError as exc:
        raise QPMError(f"--coverage: {exc}.", "Pass e.g. --coverage 0.9.") from None
    run = rf.open_run(args.run_dir, args.data_root)
    found = choose_model(run, args.model_type, args.variant)
    c = run.config
    seed = c.seed if args.seed is None else args.seed
    rf.check_model_file(found.folder, found.model_type, run.path)
    model = load(run.path, found.model_type, args.device, variant=found.variant)
    data = build_data(c.dataset, c.data_root, c.image_size, c.crop_gt)
    rf.check_data(run.path, rf.data_fingerprint(data, c.data_root), args.data_root)
    n_classes = len(model.class_names)
    if args.calibration == "reference":  # needs no labels: refuse a too small set before work
        reference_split(len(data.test), n_classes)
    log.info(f"running {found.label} over the {len(data.test)} test images ...")
    out, labels = dataset_outputs(model, data.test, args.batch_size)
    methods = methods_for(out.weight)
    if "hierarchical" in methods and out.logit_mismatch() > MISMATCH_LIMIT:
        raise QPMError(f"{found.label}: the final layer's inputs do not reproduce its logits "
                       f"(relative error {out.logit_mismatch():.2g}), so the hierarchical "
                       "score would rank other activations than the model uses.",
                       "Report this as a bug: the model type's layer input is read wrongly.")
    split = make_split(args.calibration, labels, n_classes, seed=seed,
                       fraction=args.calibration_share)
    report = evaluate(out, labels, split, methods, (coverage,), seed=seed,
                      repeats=args.repeats)
    cal = split.calibration
    summary = {
        "variant": found.variant, "coverage": coverage, "seed": seed,
        "split": split.to_dict(), "split_text": split.describe(), "methods": methods,
        "thresholds": {m: report.thresholds[m][coverage].to_dict() for m in methods},
        "evaluation": {m: report.results[m][coverage].to_dict() for m in methods},
        "bound": Bound(coverage, len(cal)).line(),
    }
    arrays = {"logits": out.logits[cal].astype(np.float32),
              "values": out.values[cal].astype(np.float32),
              "labels": labels[cal], "indices": cal}
    path = rf.write_calibration(found.folder, found.model_type, summary, arrays)
    print(format_report(report, f"{found.label}: calibrated at coverage {coverage:g}"))
    th = report.thresholds.get("hierarchical", {}).get(coverage)
    if th is not None:
        acc = ", ".join(f"{a:.3f}" for a in th.path_accuracy)
        print(f"hierarchical: true class on the predicted path for 1..{len(th.path_accuracy)} "
              f"features: {acc} of the calibration images; level {th.level} (the reference's "
              f"rule: {th.reference_level})")
    print(f"calibration written to {printable(path)}")
    return 0
