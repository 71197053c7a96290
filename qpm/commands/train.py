"""``qpm train``: data -> dense model -> features -> assignment -> fine-tuned QPM model."""

from __future__ import annotations

import argparse

from qpm import logs
from qpm.errors import QPMError

log = logs.get("train")

DEFAULTS_NOTE = "(default: the recipe's, or the run folder's)"
# Flags whose default is shown in the help; every flag's parser default is None ("not given"),
# so that a re-run takes what it does not give from the run folder's config.json.
SHOWN = {"dataset": "mnist-5k", "workers": -1, "model_type": "qpm", "tau_rule": "paper",
         "mip_gap": 1e-4, "beta": 0.196, "seed": 0, "device": "auto"}


def _default(name: str) -> str:
    return f"(default: {SHOWN[name]}, or the run folder's)"


def add_parser(subparsers) -> argparse.ArgumentParser:
    # No choices= from qpm.data here: importing it imports torch, and --help must not wait for
    # that; the recipe and the augmentation are checked when the config is resolved.
    p = subparsers.add_parser(
        "train",
        help="train a QPM model end to end (resumable run folder)",
        description="Train the dense model, extract features, solve the feature-class "
        "assignment and fine-tune the QPM model. Artifacts go to runs/<dataset>/<arch>/<seed>/ "
        "(or --run-dir); re-running skips finished stages and resumes an interrupted "
        "training from its last epoch, and takes every flag it does not give from the run "
        "folder's config.json (only the flags given can differ). The default (mnist-5k, "
        "small-cnn) runs offline on a CPU in minutes. What is not given comes from the "
        "--recipe, which follows from the starting point: scratch for a backbone trained from "
        "scratch, paper (the QPM reference's fine-tuning settings) for a pretrained one.",
    )
    d = p.add_argument_group("data")
    d.add_argument("--dataset", help="mnist-5k (offline), digits, cub2011, stanford-cars, "
                   "travelingbirds, imagenet or imagefolder " + _default("dataset"))
    d.add_argument("--data-root", metavar="DIR", help="dataset folder (not needed offline)")
    d.add_argument("--recipe",
                   help="scratch (a backbone from scratch: small-cnn, short schedule, no flips), "
                   "paper (fine-tuning pretrained weights as the reference does) or dino "
                   "(DINO-QPM's settings: a frozen backbone with an adapter); every recipe fits "
                   "every dataset (default: from the starting point: a frozen backbone or a timm "
                   "ViT gives dino; --weights none, small-cnn or pretrained weights not on disk "
                   "give scratch; the paper's datasets give paper)")
    d.add_argument("--crop-gt", action=argparse.BooleanOptionalAction, default=None,
                   help="crop CUB/TravelingBirds images to their boxes (default: the recipe's; "
                   "paper: yes)")
    d.add_argument("--image-size", type=int, metavar="PX",
                   help="input size (default: the recipe's; paper: 224)")
    d.add_argument("--augment",
                   help="training augmentation: reference (the reference's crop, colour jitter "
                   "and TrivialAugmentWide), affine (small rotation, zoom, shift) or none "
                   "(default: the recipe's; paper: reference, scratch: affine)")
    d.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help="horizontal flips in training; --no-flip where a mirror image changes "
                   "the class (digits, text) (default: the recipe's; paper: yes, scratch: no)")
    d.add_argument("--workers", type=int,
                   help="data-loading processes per GPU process (-1: the node's CPUs split "
                   "over its processes, at most 8; CPU runs always load in-process) "
                   "(default: -1)")
    m = p.add_argument_group("model")
    m.add_argument("--arch", help="small-cnn, resnet18, resnet34, resnet50 or timm:<name> "
                   "(default: the recipe's; paper: resnet50, scratch: small-cnn)")
    m.add_argument("--weights", help="none, a torchvision weights name (e.g. IMAGENET1K_V1; "
                   "downloaded once), pretrained (timm names: timm's file, read from disk) or "
                   "a local weights file (.pth state_dict or .safetensors) (default: the "
                   "recipe's; paper: IMAGENET1K_V1 for ResNets; dino: pretrained, or the "
                   "unfrozen run's dense.pt for small-cnn)")
    m.add_argument("--reduced-strides", action=argparse.BooleanOptionalAction, default=None,
                   help="stride 1 in ResNet layer3 and layer4: 28x28 maps at 224 px "
                   "(default: the recipe's; paper: yes)")
    m.add_argument("--dense-training", action=argparse.BooleanOptionalAction, default=None,
                   help="train the dense model; --no-dense-training uses the pretrained model "
                   "and its classifier (default: the recipe's; paper: not for imagenet)")
    m.add_argument("--frozen-backbone", action=argparse.BooleanOptionalAction, default=None,
                   help="keep the backbone as loaded and train the DINO-QPM adapter on its "
                   "outputs, computed once into RUN/tokens/ (default: the recipe's; dino: yes)")
    m.add_argument("--adapter-layers", type=int, metavar="N",
                   help="adapter: linear layers per patch, each with BatchNorm and ReLU; 0: no "
                   "adapter (default: the recipe's; dino: 4)")
    m.add_argument("--adapter-hidden", type=int, metavar="W",
                   help="adapter: width between its layers (dino: 2048)")
    m.add_argument("--adapter-features", type=int, metavar="F",
                   help="adapter: its outputs, the model's features (dino: 512)")
    m.add_argument("--model-type", help="final layer: qpm, chiqpm (CHiQPM: forced class "
                   "pairs, a ReLU, the feature grounding loss) or a baseline (sldd, qsenn) "
                   + _default("model_type"))
    m.add_argument("--reference-quirks", action=argparse.BooleanOptionalAction, default=None,
                   help="sldd and qsenn only: train exactly as the reference code does, quirks "
                   "included, to reproduce the papers' rows (a variant of its own; README) "
                   "(default: no, or the run folder's)")
    a = p.add_argument_group("assignment")
    from qpm.assignment.backends import DEFAULT_SOLVER, solver_names

    a.add_argument("--solver", choices=solver_names(),
                   help="gurobi falls back to HiGHS when its licence cannot take the model "
                   f"(default: {DEFAULT_SOLVER}, or the run folder's)")
    a.add_argument("--preset", help="constraint preset (see qpm solve; default: qpm, chiqpm "
                   "for --model-type chiqpm, with --assignment: the result's)")
    a.add_argument("--rho", type=float, help="preset chiqpm: the int(RHO * C) closest class "
                   "pairs share k-1 features (default: 0.5, or the run folder's; with "
                   "--assignment: the result's)")
    a.add_argument("--tau-rule", help="how the redundancy threshold is chosen: paper (the "
                   "reference's search) or tight (see qpm solve) " + _default("tau_rule"))
    a.add_argument("--n-features", type=int,
                   help="features kept (n; default: 50, but at most classes x k and the "
                   "backbone's features; with --assignment: the result's)")
    a.add_argument("--per-class", type=int,
                   help="features per class (k; default: 5, with --assignment: the result's)")
    from qpm.assignment.limits import LARGE_CELLS, LARGE_TIME_LIMIT, MIN_TIME_LIMIT

    a.add_argument("--time-limit", type=float, metavar="S",
                   help=f"seconds for the solve (default: scaled with features x classes, "
                   f"from {MIN_TIME_LIMIT:.0f} s up to {LARGE_TIME_LIMIT:.0f} s at "
                   f"{LARGE_CELLS:,} and more; printed)")
    a.add_argument("--mip-gap", type=float, help="relative MIP gap (default: the recipe's; "
                   "1e-4, dino: 5e-3; or the run folder's)")
    a.add_argument("--locality-bias", choices=("on", "off"),
                   help="the locality term b in the objective (default: the recipe's; on, "
                   "dino: off)")
    a.add_argument("--strict-solver", action=argparse.BooleanOptionalAction, default=None,
                   help="fail instead of falling back to HiGHS when Gurobi cannot take the model "
                   "(default: no, or the run folder's)")
    a.add_argument("--assignment", metavar="RESULT.json",
                   help="use this qpm solve result (on this run's similarities.npz) instead of "
                   "solving; it is verified against the run's similarities first")
    t = p.add_argument_group("training " + DEFAULTS_NOTE)
    t.add_argument("--epochs", type=int, help="dense epochs")
    t.add_argument("--ft-epochs", type=int, help="fine-tuning epochs")
    t.add_argument("--lr", type=float, help="dense learning rate")
    t.add_argument("--classifier-lr", type=float, help="dense classifier learning rate")
    t.add_argument("--ft-lr", type=float, help="fine-tuning learning rate")
    t.add_argument("--batch-size", type=int,
                   help="training batch size (global: split evenly over torchrun processes)")
    t.add_argument("--beta", type=float, help="feature-diversity loss weight (default: the "
                   "recipe's; 0.196, dino: 0.5; or the run folder's)")
    t.add_argument("--ft-beta", type=float, help="its weight in fine-tuning (default: --beta; "
                   "dino: 1.0)")
    t.add_argument("--optimizer", choices=("sgd", "adamw-schedulefree"),
                   help="sgd with a step schedule, or schedule-free AdamW (the schedulefree "
                   "package; dino)")
    t.add_argument("--l1-maps", type=float, metavar="W", help="fine-tuning: L1 penalty on the "
                   "final layer's feature maps (dino: 5)")
    t.add_argument("--l1-features", type=float, metavar="W", help="fine-tuning: L1 penalty on "
                   "its pooled features (dino: 1)")
    t.add_argument("--seed", type=int, help="random seed (also names the run folder) "
                   + _default("seed"))
    t.add_argument("--device", help="auto, cpu or cuda (default: auto)")
    p.add_argument("--run-dir", metavar="DIR", help="run folder (default runs/DATASET/ARCH/SEED)")
    p.add_argument("--force", metavar="STAGE",
                   help="recompute STAGE and every later one (dense, features, similarities, "
                   "assignment, qpm; chiqpm; sldd-layer, sldd; qsenn)")
    return p


def given_settings(args: argparse.Namespace) -> dict:
    """The config fields the command line gives (every flag it does not give is None), with
    n, k and the preset of an --assignment result."""
    from dataclasses import fields

    from qpm.run_folder.config import TrainConfig

    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig)
             if getattr(args, f.name, None) is not None}
    given.update({k: v for k, v in given_problem(args).items() if v is not None})
    if given.get("model_type") in MODEL_PRESETS and "preset" not in given:
        # --model-type qpm or chiqpm brings its own preset unless --preset says otherwise
        given["preset"] = MODEL_PRESETS[given["model_type"]]
    return given


def config_from_args(args: argparse.Namespace) -> tuple:
    """The run's config: the flags given; what they leave open from the run folder's
    config.json when it has one (a re-run), else the defaults and the recipe. Also the line
    that says so ("" for a new folder), to print once the checks have passed."""
    from qpm.models.backbones import weights_on_disk
    from qpm.run_folder.config import TrainConfig, rerun_settings

    given = given_settings(args)
    given.setdefault("workers", -1)
    fresh = TrainConfig(**given)
    folder = fresh.run_dir or fresh.resolve(weights_on_disk).run_dir
    settings, line = rerun_settings(folder, given)
    return TrainConfig(**settings), line


# The preset a --model-type brings when --preset is not given.
MODEL_PRESETS = {"qpm": "qpm", "chiqpm": "chiqpm"}


def given_problem(args: argparse.Namespace) -> dict:
    """n, k, the preset and rho of the --assignment result (None each without one). Flags
    that contradict the given result are one clear line."""
    given = {"n_features": args.n_features, "per_class": args.per_class, "preset": args.preset,
             "rho": args.rho}
    if args.assignment is None:
        return {}
    if args.model_type not in (None, *MODEL_PRESETS):
        raise QPMError(f"--assignment is a QPM assignment; --model-type {args.model_type} "
                       "makes its own.", "Drop --assignment, or use --model-type qpm.")
    from qpm.assignment.result import AssignmentResult

    result = AssignmentResult.load_json(args.assignment)
    if result.matrix is None or not result.selected_features:
        raise QPMError(f"{args.assignment} holds no assignment (status "
                       f"{result.status}).", "Pass a result that qpm solve finished.")
    classes = result.matrix.shape[1]
    found = {"n_features": len(result.selected_features),
             "per_class": int(round(result.matrix.sum() / classes)), "preset": result.preset,
             "rho": result.rho}
    for key, value in given.items():
        if value is not None and value != found[key]:
            flag = "--" + key.replace("_", "-")
            raise QPMError(f"{flag} {value} contradicts --assignment "
                           f"{args.assignment}, which has {found[key]}.",
                           f"Drop {flag}: the result decides it.")
    return {**found, "model_type": args.model_type or "qpm"}


def _early_lock(args: argparse.Namespace):
    """The lock of an existing --run-dir, taken before torch is even imported, so a second
    writer is refused at once (the runner takes it, re-entrantly, in any case); a folder qpm
    must not write is refused as early."""
    import os
    from pathlib import Path

    from qpm.run_folder import claim

    if not args.run_dir or not Path(args.run_dir).is_dir() or os.environ.get("RANK", "0") != "0":
        return None
    return claim(args.run_dir)


def run(args: argparse.Namespace) -> int:
    lock = _early_lock(args)
    from qpm.commands._train_summary import beside_qpm, format_summary
    from qpm.pipeline import distributed as dist
    from qpm.pipeline.run import run_pipeline

    try:
        config, line = config_from_args(args)
        summary = run_pipeline(config, log=log.info, force=args.force,
                               notes=[line] if line else [])
        if dist.get_context().is_main:
            print(format_summary(summary))
            if summary.config.model_type == "chiqpm":
                print(beside_qpm(summary))
    finally:
        dist.cleanup()  # under torchrun: leave the process group cleanly
        if lock is not None:
            lock.release()
    return 0
