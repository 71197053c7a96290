"""``qpm predict RUN_DIR IMAGE_OR_FOLDER...``: classify images with a trained model."""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

from qpm import logs
from qpm.commands._common import add_variant_argument

log = logs.get("predict")

COLUMNS = ("path", "class_index", "class", "probability", "features", "input_warning")
SET_COLUMNS = ("prediction_set", "set_size", "conformal")
# Exit code when some images could not be read and the others were predicted.
SOME_FAILED = 3
CSV_SUFFIXES = (".csv", ".tsv", ".txt")  # an existing --out is replaced only if it is one


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "predict",
        help="classify images with a trained model (CSV), optionally explaining each",
        description="Classify image files (folders are searched recursively) with a run "
        "folder's model, using the run's own test transform. Prints one CSV row per image "
        "(path, class index, class name, probability, and the predicted class's features "
        "with their activations, largest contribution first, and how the image differs from "
        "the training images, if it does: size, colour or brightness), or writes it to --out. "
        "--explain DIR also writes a local-explanation figure per image. Images that cannot "
        f"be read are listed and the others predicted; the exit code is then {SOME_FAILED}.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a folder written by qpm train")
    p.add_argument("images", metavar="IMAGE_OR_FOLDER", nargs="+",
                   help="image files or folders of images")
    p.add_argument("--model-type", default="qpm", metavar="NAME",
                   help="which model of the run to use: qpm, dense, sldd or qsenn (default qpm)")
    add_variant_argument(p)
    p.add_argument("--out", metavar="CSV", help="write the predictions here (default: stdout)")
    p.add_argument("--explain", metavar="DIR",
                   help="write DIR/NNNN.png, a local explanation of image NNNN (CSV order)")
    p.add_argument("--coverage", type=float, metavar="C",
                   help="also each image's conformal prediction set at this coverage (e.g. "
                   "0.9), from the calibration qpm calibrate stored")
    p.add_argument("--method", choices=("hierarchical", "thr", "aps"),
                   help="conformal method for --coverage (default: hierarchical where the "
                   "model allows it, else thr)")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    return p


def _check_outputs(args: argparse.Namespace, files: list[Path]) -> None:
    """--out and --explain before any work: neither may destroy an input image or a run
    folder's file (:func:`qpm.commands._common.check_output`, shared with solve and
    similarities)."""
    from qpm import run_folder as rf
    from qpm.commands._common import check_output
    from qpm.errors import QPMError
    from qpm.io import check_output_folder
    from qpm.text import printable

    if args.out:
        check_output(args.out, "--out", inputs=files, suffixes=CSV_SUFFIXES)
    if args.explain:
        folder = Path(args.explain)
        whose = rf.artifact_owner(folder / "0000.png")
        if whose is not None:
            raise QPMError(f"--explain {printable(folder)} is inside a run folder's files "
                           f"({whose}).", "Pass a folder of your own for the figures.")
        check_output_folder(folder, "--explain")
        here = folder.resolve()  # the figures are NNNN.png: an input named so would be lost
        clash = next((f for f in files if Path(f).resolve().parent == here
                      and Path(f).stem.isdigit() and Path(f).suffix == ".png"), None)
        if clash is not None:
            raise QPMError(f"--explain {printable(folder)} would write over the input image "
                           f"{printable(clash)}.", "Pass another folder for the figures.")


def run(args: argparse.Namespace) -> int:
    from qpm.errors import QPMError
    from qpm.inference import load
    from qpm.inference.inputs import find_images
    from qpm.io import atomic_write
    from qpm.text import csv_row, printable

    if args.batch_size < 1:
        raise QPMError(f"--batch-size must be positive, got {args.batch_size}.",
                       "Pass e.g. --batch-size 64.")
    out = Path(args.out) if args.out else None
    explain_dir = Path(args.explain) if args.explain else None
    files = find_images(args.images)
    _check_outputs(args, files)
    model = load(args.run_dir, args.model_type, args.device, variant=args.variant)
    if args.coverage is not None:
        model.calibration()  # one line before any work when there is none
    pred = model.predict(files, batch_size=args.batch_size, skip_unreadable=True,
                         coverage=args.coverage, method=args.method)
    figures = {}
    if explain_dir is not None:
        explain_dir.mkdir(parents=True, exist_ok=True)
        width = max(4, len(str(len(pred))))
        for i, f in enumerate(pred.sources):
            expl = model.explain(f, coverage=args.coverage, method=args.method)
            figures[i] = expl.save(explain_dir / f"{i:0{width}d}.png")
    sets = pred.sets
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS + (SET_COLUMNS if sets else ()) + (("explanation",) if figures
                                                                else ()))
    for i in range(len(pred)):
        feats = "; ".join(f"{f.name} ({f.activation:.3g})" for f in pred.features[i])
        row = [printable(pred.sources[i]), int(pred.classes[i]), printable(pred.names[i]),
               f"{pred.confidence[i]:.4f}", feats, "; ".join(pred.warnings[i])]
        if sets:
            row += ["; ".join(printable(n) for n in sets.names[i]), len(sets.classes[i]),
                    _set_rule(sets)]
        writer.writerow(csv_row(row + ([printable(figures[i])] if figures else [])))
    if out is None:
        sys.stdout.write(buf.getvalue())
    else:
        atomic_write(out, lambda fh: fh.write(buf.getvalue()), mode="w")
        print(f"{len(pred)} predictions written to {printable(out)}"
              + (f"; explanations in {printable(explain_dir)}" if figures else ""))
    if sets:
        log.info(sets.describe())
        if out is not None:
            print(sets.describe())
    return _report(pred)


def _set_rule(sets) -> str:
    """A short, self-describing note in every row: which method, coverage and calibration."""
    level = "" if sets.threshold.level is None else f", level {sets.threshold.level}"
    return (f"{sets.method} at {sets.coverage:g}{level}; calibrated on "
            f"{sets.threshold.n} test images ({sets.split} split)")


def _report(pred) -> int:
    """Warnings for inputs unlike the training images and for unread files; the exit code."""
    from qpm.text import printable

    unlike = sum(1 for w in pred.warnings if w)
    if unlike:
        log.warning(f"{unlike} of {len(pred)} images differ from the training images (size, "
                    "colour or brightness): their predictions may mean little; see the "
                    "input_warning column")
    if not pred.failed:
        return 0
    log.warning(f"{len(pred.failed)} of {len(pred) + len(pred.failed)} images could not be "
                f"read and were not predicted (exit code {SOME_FAILED}):")
    for path, why in pred.failed:
        log.warning(f"  {printable(path)}: {printable(why)}")
    return SOME_FAILED
