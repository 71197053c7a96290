"""``qpm evaluate RUN_DIR``: the paper's metrics for every finished model of a run folder."""

from __future__ import annotations

import argparse

from qpm import logs
from qpm.commands._common import add_run_folder_arguments, check_run_folder_arguments
from qpm.pipeline.run_folder import holding_lock

log = logs.get("evaluate")


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "evaluate",
        help="accuracy and interpretability metrics of a run folder's models",
        description="Compute accuracy, number of features, features per class, SID@5, "
        "Q-SENN's diversity@5, Class-Independence, Contrastiveness, Correlation, Dependence, "
        "Structural Grounding and Alignment (both CUB only) as the QPM reference code does, "
        "for every finished model (dense, qpm, qsenn, sldd) in RUN_DIR; merge them into "
        "RUN_DIR/metrics.json and print a table.",
    )
    add_run_folder_arguments(p)
    p.add_argument("--model-type", action="append", dest="model_types", metavar="NAME",
                   help="evaluate only this model type (repeatable; default: all finished)")
    return p


@holding_lock
def run(args: argparse.Namespace) -> int:
    from qpm.errors import QPMError
    from qpm.explain.structure import FeatureCounts
    from qpm.metrics.model_eval import evaluate_model, format_table, head_weights
    from qpm.metrics.run_folder import class_attributes_for, image_attributes_for, open_run
    from qpm.pipeline import distributed as dist
    from qpm.pipeline import run_folder as rf
    from qpm.pipeline.data import build_data
    from qpm.pipeline.run import merge_metrics

    check_run_folder_arguments(args)
    run = open_run(args.run_dir, args.data_root)
    names = args.model_types or list(run.models)
    missing = [n for n in names if n not in run.models]
    if missing:
        raise QPMError(f"{run.path} has no finished {', '.join(missing)} model.",
                       f"Choose from: {', '.join(run.models)}.")
    if args.batch_size < 1:
        raise QPMError(f"--batch-size must be positive, got {args.batch_size}.",
                       "Pass e.g. --batch-size 128.")
    c = run.config
    device = dist.get_context(args.device).device
    data = build_data(c.dataset, c.data_root, c.image_size, c.crop_gt)
    rf.check_data(run.path, rf.data_fingerprint(data, c.data_root), args.data_root)
    attrs = class_attributes_for(c)
    image_attrs = image_attributes_for(c)
    results, counts = {}, {}
    for name in names:
        try:
            rf.check_model_file(run.path, name)
            model, _ = run.load(name, device)
        except QPMError as exc:  # one stale or corrupt model file should not hide the rest
            log.warning(f"skipping {name}: {exc}")
            continue
        log.info(f"evaluating {name} ...")
        results[name] = evaluate_model(model, data.train_eval, data.test, device,
                                       args.batch_size, attrs, seed=c.seed,
                                       image_attributes=image_attrs)
        if name != "dense":
            counts[name] = FeatureCounts.of(head_weights(model)[0])
    if not results:
        raise QPMError(f"No model in {run.path} could be loaded.",
                       "Re-run qpm train there to recompute the unusable model files.")
    print(format_table(results))
    for name, count in counts.items():  # "n selected, m used" of every sparse layer
        print(f"{name}: {count.line()}")
        if count.warning():
            print(count.warning())
    try:
        merge_metrics(run.path, results)
    except OSError as exc:
        raise QPMError(f"Could not record the metrics in {run.path / rf.METRICS} "
                       f"({exc.strerror or exc}).",
                       "The table above holds them; make the run folder writable to record "
                       "them.") from None
    return 0
