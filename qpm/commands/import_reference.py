"""``qpm import-reference CHECKPOINT``: a QPM reference checkpoint as a qpm run folder."""

from __future__ import annotations

import argparse

from qpm import logs

log = logs.get("import-reference")
MODEL_TYPES = ("qpm", "qsenn", "sldd", "dense")


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "import-reference",
        help="turn a checkpoint of the QPM reference code into a run folder",
        description="Read a model saved by the QPM reference implementation "
        "(github.com/ThomasNorr/QPM: its ResNet backbone and its final layer linear.*, e.g. "
        "the published ResNet-50 QPM and Q-SENN models for CUB) and write a run folder that "
        "qpm evaluate, qpm explain, qpm predict and qpm.load use like one qpm train wrote. "
        "Settings not in the checkpoint come from the paper recipe.",
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="the reference's .pth state_dict")
    p.add_argument("--dataset", required=True,
                   help="the dataset it was trained on: cub2011, travelingbirds, stanford-cars, "
                   "imagenet or imagefolder")
    p.add_argument("--data-root", metavar="DIR", help="that dataset's folder")
    p.add_argument("--run-dir", required=True, metavar="DIR", help="the new run folder")
    p.add_argument("--crop-gt", action=argparse.BooleanOptionalAction, default=None,
                   help="the model was trained on images cropped to their boxes (default: the "
                   "paper recipe's, yes for CUB; the published QPM-NoCrop needs --no-crop-gt)")
    p.add_argument("--reduced-strides", action=argparse.BooleanOptionalAction, default=True,
                   help="stride 1 in layer3 and layer4, as the reference trains (default: yes)")
    p.add_argument("--image-size", type=int, metavar="PX", help="input size (default: 224)")
    p.add_argument("--model-type", choices=MODEL_TYPES,
                   help="what the final layer is (default: detected; binary weights without "
                   "bias are qpm, real-valued ones qsenn)")
    return p


def run(args: argparse.Namespace) -> int:
    from qpm.pipeline.import_reference import import_reference
    from qpm.text import printable

    ref = import_reference(args.checkpoint, args.dataset, args.data_root, args.run_dir,
                           crop_gt=args.crop_gt, reduced_strides=args.reduced_strides,
                           image_size=args.image_size, model_type=args.model_type)
    sizes = "" if ref.model_type == "dense" else (
        f", {ref.n_features} features, up to {ref.per_class} per class")
    print(f"imported a {ref.arch} {ref.model_type} model ({ref.model.num_classes} classes"
          f"{sizes}) into {printable(args.run_dir)}; "
          f"next: qpm evaluate {printable(args.run_dir)}")
    return 0
