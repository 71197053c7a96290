"""The conformal part of ``qpm evaluate``: every method that works with a model, at the
reference's four target coverages, calibrated and measured on disjoint test images."""

from __future__ import annotations

import argparse

import numpy as np

from qpm import logs

log = logs.get("evaluate")


def choose_split(model, labels: np.ndarray, n_classes: int, args: argparse.Namespace,
                 run_seed: int):
    """--calibration when given; else the split ``qpm calibrate`` stored for this model (the
    same rule, seed and share, so its calibration images stay out of the coverage); else the
    default stratified split with the run's seed."""
    from qpm import run_folder as rf
    from qpm.conformal import make_split
    from qpm.errors import QPMError

    seed = run_seed if args.seed is None else args.seed
    if args.calibration is not None:
        return make_split(args.calibration, labels, n_classes, seed=seed,
                          fraction=args.calibration_share)
    if rf.calibration_paths(model.folder, model.model_type)[0].is_file():
        try:
            summary, arrays = rf.read_calibration(model.folder, model.model_type, "")
        except QPMError as exc:
            log.warning(f"{model.label}: stored calibration not used ({exc.problem}); "
                        "evaluating on the default split")
        else:
            d = summary.get("split") or {}
            split = make_split(str(d.get("rule")), labels, n_classes,
                               seed=int(d.get("seed") or 0),
                               fraction=float(d.get("fraction") or 0.5))
            if np.array_equal(split.calibration, arrays["indices"]):
                return split
            log.warning(f"{model.label}: the stored calibration's images differ from its "
                        "split on this test set; evaluating on the default split")
    return make_split("stratified", labels, n_classes, seed=seed,
                      fraction=args.calibration_share)


def conformal_report(model, test: dict, weight: np.ndarray, args: argparse.Namespace,
                     run_seed: int, class_attributes: np.ndarray | None):
    """(table text, JSON-ready dict) for one model from its test pass ``test``."""
    from qpm.conformal import Outputs, evaluate, format_report, methods_for
    from qpm.conformal.evaluation import cosine_similarity

    out = Outputs(test["logits"].astype(np.float64), test["head_input"].astype(np.float64),
                  weight)
    labels = test["labels"].astype(np.int64)
    split = choose_split(model, labels, weight.shape[0], args, run_seed)
    sim = None if class_attributes is None else cosine_similarity(class_attributes)
    seed = run_seed if args.seed is None else args.seed
    report = evaluate(out, labels, split, methods_for(weight), class_similarity=sim,
                      seed=seed, repeats=args.repeats)
    return format_report(report, f"{model.label}: conformal prediction sets"), report.to_dict()
