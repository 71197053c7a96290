"""Arguments shared by the commands that read a run folder (evaluate, explain, predict)."""

from __future__ import annotations

import argparse


def add_run_folder_arguments(p: argparse.ArgumentParser) -> None:
    """RUN_DIR plus where its data lives and how to run the model over it."""
    p.add_argument("run_dir", metavar="RUN_DIR", help="a folder written by qpm train")
    p.add_argument("--data-root", metavar="DIR", help="dataset folder, if it moved")
    p.add_argument("--batch-size", type=int, default=128, help="images per forward pass")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")


def add_variant_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--variant", metavar="NAME",
                   help="which setting of the model type: its folder under RUN_DIR/variants/ "
                   "or a unique start of it, e.g. qpm-n30 (default: the most recently trained)")


def check_run_folder_arguments(args: argparse.Namespace) -> None:
    """One line for a bad --device or --batch-size, before anything is loaded."""
    from qpm.errors import QPMError
    from qpm.run_folder.config import check_device

    check_device(args.device)
    if args.batch_size < 1:
        raise QPMError(f"--batch-size must be positive, got {args.batch_size}.",
                       "Pass e.g. --batch-size 128.")


def add_calibration_arguments(p: argparse.ArgumentParser, default: str | None = "stratified",
                              default_text: str = "stratified") -> None:
    """Which test images calibrate (qpm calibrate, qpm evaluate)."""
    p.add_argument("--calibration", choices=("stratified", "reference"), default=default,
                   help="stratified: a seeded random share of each class's test images; "
                   "reference: the CHiQPM reference's split (image i when i mod floor(N/C) "
                   f"< 10), for reproducing its tables (default: {default_text})")
    p.add_argument("--calibration-share", type=float, default=0.5, metavar="F",
                   help="share of each class's test images that calibrates (stratified)")
    p.add_argument("--repeats", type=int, default=100, metavar="R",
                   help="also average coverage over R random stratified splits (0: off): "
                   "the estimate of E[coverage] the finite-sample bound is about; costs R "
                   "passes over the (test images x classes) scores: seconds at CUB size, "
                   "minutes at ImageNet size")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the stratified split and of APS's randomisation (default: "
                   "the run's seed)")


def choose_model(run, model_type: str | None, variant: str | None):
    """The run's model for a command that takes --model-type and --variant: the type of the
    variant named, else the most recently trained sparse model (dense when that is all)."""
    from qpm.errors import QPMError

    if model_type is not None:
        return run.find(model_type, variant)
    models = [m for m in run.models if m.model_type != "dense"] or run.models
    if variant is not None:
        exact = [m for m in models if m.label == variant]
        models = exact or [m for m in models if m.label.startswith(variant)]
        if len(models) != 1:
            what = "no" if not models else "more than one"
            raise QPMError(f"{run.path} has {what} model variant {variant!r}.",
                           "Choose one of: " + ", ".join(m.label for m in run.models) + ".")
    return max(models, key=lambda m: m.file.stat().st_mtime_ns)


def check_output(path, flag: str, inputs=(), suffixes: tuple[str, ...] = ()) -> None:
    """The one check of an output file a user names (predict, solve, similarities), before
    the work: not a folder, not an input, not a run folder's artifact, not an existing file of
    another kind (``suffixes``), and its folder writable (:func:`qpm.io.check_output_file`)."""
    from qpm import run_folder as rf
    from qpm.io import check_output_file

    check_output_file(path, flag, inputs, suffixes, owned=rf.artifact_owner)
