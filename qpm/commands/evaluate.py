"""``qpm evaluate RUN_DIR``: the paper's metrics for every finished model of a run folder."""

from __future__ import annotations

import argparse

from qpm import logs
from qpm.commands._common import (
    add_calibration_arguments,
    add_run_folder_arguments,
    add_variant_argument,
    check_run_folder_arguments,
)
from qpm.run_folder import holding_lock

log = logs.get("evaluate")


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "evaluate",
        help="accuracy and interpretability metrics of a run folder's models",
        description="Compute accuracy, number of features, features per class, class pairs "
        "sharing k-1 features (of them CHiQPM's forced pairs, when a chiqpm model is there), "
        "SID@5, Q-SENN's diversity@5, Class-Independence, Contrastiveness, Correlation, "
        "Dependence, Structural Grounding, Alignment and Plausibility (CUB only; Plausibility "
        "needs its segmentations/) as the QPM and DINO-QPM reference code do, for every "
        "finished model in RUN_DIR (dense and every variant of qpm, chiqpm, qsenn, sldd); "
        "print a table and record them in each model's metrics.json. "
        "Then, per model, the conformal prediction sets of every method that works with it "
        "(hierarchical, thr, aps) at target coverages 0.88, 0.9, 0.925 and 0.95: coverage, "
        "average size and (CUB) SetCoherence on test images disjoint from the calibration "
        "images.",
    )
    add_run_folder_arguments(p)
    p.add_argument("--model-type", action="append", dest="model_types", metavar="NAME",
                   help="evaluate only this model type (repeatable; default: all finished)")
    add_variant_argument(p)
    add_calibration_arguments(p, default=None, default_text="the split qpm calibrate "
                              "stored for the model, else stratified")
    return p


@holding_lock
def run(args: argparse.Namespace) -> int:
    from qpm import run_folder as rf
    from qpm.errors import QPMError
    from qpm.metrics.model_eval import format_table
    from qpm.pipeline import distributed as dist
    from qpm.pipeline.run import merge_metrics

    check_run_folder_arguments(args)
    run = rf.open_run(args.run_dir, args.data_root)
    types = args.model_types or run.types()
    missing = [t for t in types if t not in run.types()]
    if missing:
        raise QPMError(f"{run.path} has no finished {', '.join(missing)} model.",
                       f"Choose from: {', '.join(run.types())}.")
    models = [m for m in run.models if m.model_type in types]
    if args.variant is not None:  # that variant of each sparse type, and dense if asked for
        models = [m if m.variant is None and m.model_type == "dense"
                  else run.find(m.model_type, args.variant) for m in models]
        models = list(dict.fromkeys(models))
    device = dist.get_context(args.device).device
    results, counts, where, sets = evaluate_models(run, models, device, args.batch_size,
                                                   args.data_root, conformal=args)
    print(format_table(results))
    for name, count in counts.items():  # "n selected, m used" of every sparse layer
        print(f"{name}: {count.line()}")
        if count.warning():
            print(count.warning())
    for text in sets.values():
        print()
        print(text)
    for label, values in results.items():  # each model's metrics next to its model file
        m = where[label]
        try:
            merge_metrics(m.folder, {m.model_type: values})
        except OSError as exc:
            raise QPMError(f"Could not record the metrics in {m.folder / rf.METRICS} "
                           f"({exc.strerror or exc}).",
                           "The table above holds them; make the run folder writable to "
                           "record them.") from None
    return 0


def evaluate_models(run, models: list, device, batch_size: int, data_root: str | None = None,
                    conformal: argparse.Namespace | None = None
                    ) -> tuple[dict, dict, dict, dict]:
    """Every metric of each of ``models`` (of the open run folder ``run``): the results by
    model label, the "n selected, m used" counts of the sparse ones, each label's model and,
    with ``conformal`` (the calibration arguments), each one's conformal report text (its
    numbers go into the results). A stale or corrupt model file is skipped with a warning."""
    from qpm import run_folder as rf
    from qpm.commands._conformal import conformal_report
    from qpm.data import build_data
    from qpm.errors import QPMError
    from qpm.explain.structure import FeatureCounts
    from qpm.metrics.cub import class_attributes_for, image_attributes_for, segmentations_for
    from qpm.metrics.model_eval import evaluate_model, head_weights
    from qpm.models.checkpoint import load_model

    c = run.config
    data = build_data(c.dataset, c.data_root, c.image_size, c.crop_gt)
    rf.check_data(run.path, rf.data_fingerprint(data, c.data_root), data_root)
    attrs = class_attributes_for(c)
    image_attrs = image_attributes_for(c)
    masks = segmentations_for(c, data.test)
    pairs = forced_pairs_of(run, models)
    results, counts, where, sets = {}, {}, {}, {}
    for m in models:
        try:
            rf.check_model_file(m.folder, m.model_type, run.path)
            model, _ = load_model(m.file, device)
        except QPMError as exc:  # one stale or corrupt model file should not hide the rest
            log.warning(f"skipping {m.label}: {exc}")
            continue
        log.info(f"evaluating {m.label} ...")
        test = {}
        results[m.label] = evaluate_model(model, data.train_eval, data.test, device,
                                          batch_size, attrs, seed=c.seed,
                                          image_attributes=image_attrs, test_outputs=test,
                                          segmentations=masks,
                                          forced_pairs=None if m.model_type == "dense"
                                          else pairs)
        if conformal is not None:
            sets[m.label], results[m.label]["conformal"] = conformal_report(
                m, test, head_weights(model)[0], conformal, c.seed, attrs)
        where[m.label] = m
        if m.model_type != "dense":
            counts[m.label] = FeatureCounts.of(head_weights(model)[0])
    if not results:
        raise QPMError(f"No model in {run.path} could be loaded.",
                       "Re-run qpm train there to recompute the unusable model files.")
    return results, counts, where, sets


def forced_pairs_of(run, models: list):
    """CHiQPM's forced class pairs when a chiqpm model is among ``models`` (from the run's
    similarities and that model's rho; every sparse model is measured on the same pairs),
    else None."""
    from qpm import run_folder as rf
    from qpm.assignment.forced_pairs import closest_pairs

    chiqpm = [m for m in models if m.model_type == "chiqpm"]
    if not chiqpm or not (run.path / rf.SIMILARITIES).is_file():
        return None
    A = rf.read_arrays(run.path / rf.SIMILARITIES, ("A",))["A"]
    return closest_pairs(A, run.config_of(chiqpm[0]).rho)
