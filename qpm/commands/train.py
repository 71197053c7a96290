"""``qpm train``: data -> dense model -> features -> assignment -> fine-tuned QPM model."""

from __future__ import annotations

import argparse
from itertools import combinations

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
                   help="scratch (a backbone from scratch: small-cnn, short schedule, no flips) "
                   "or paper (fine-tuning pretrained weights as the reference does); every "
                   "recipe fits every dataset (default: from the starting point: --weights "
                   "none, small-cnn or pretrained weights not on disk give scratch; the "
                   "paper's datasets give paper)")
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
                   "downloaded once) or a local state_dict file (default: the recipe's for "
                   "ResNets, paper: IMAGENET1K_V1; none otherwise)")
    m.add_argument("--reduced-strides", action=argparse.BooleanOptionalAction, default=None,
                   help="stride 1 in ResNet layer3 and layer4: 28x28 maps at 224 px "
                   "(default: the recipe's; paper: yes)")
    m.add_argument("--dense-training", action=argparse.BooleanOptionalAction, default=None,
                   help="train the dense model; --no-dense-training uses the pretrained model "
                   "and its classifier (default: the recipe's; paper: not for imagenet)")
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
    a.add_argument("--mip-gap", type=float, help="relative MIP gap " + _default("mip_gap"))
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
    t.add_argument("--beta", type=float, help="feature-diversity loss weight "
                   + _default("beta"))
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


def _fmt_acc(metrics: dict, key: str) -> str:
    value = metrics.get(key, {}).get("accuracy")
    return "n/a" if value is None else f"{value:.2f}%"


def explanation_lines(assignment: dict[int, list[int]], class_names: list[str],
                      max_classes: int = 20, max_pairs: int = 10) -> list[str]:
    """Each class with its features, and how many features pairs of classes share."""
    from qpm.text import printable

    class_names = [printable(n) for n in class_names]
    lines = []
    classes = sorted(assignment)
    for c in classes[:max_classes]:
        name = class_names[c] if c < len(class_names) else str(c)
        lines.append(f"  class {name}: features {', '.join(str(f) for f in assignment[c])}")
    if len(classes) > max_classes:
        lines.append(f"  ... {len(classes) - max_classes} more classes (see assignment.json)")
    sets = {c: set(assignment[c]) for c in classes}
    shared = sorted(((len(sets[a] & sets[b]), a, b) for a, b in combinations(classes, 2)),
                    reverse=True)
    if shared:
        counts: dict[int, int] = {}
        for n, _, _ in shared:
            counts[n] = counts.get(n, 0) + 1
        hist = ", ".join(f"{n} shared: {counts[n]} pairs" for n in sorted(counts))
        lines.append(f"  class pairs by shared features: {hist}")
        top = [s for s in shared if s[0] > 0][:max_pairs]
        if top:
            lines.append("  most similar classes: " + "; ".join(
                f"{class_names[a]} & {class_names[b]} share {n}" for n, a, b in top))
    return lines


def assignment_counts(assignment: dict[int, list[int]], selected: list[int]):
    """"n selected, m used" of an assignment (class -> features)."""
    from qpm.explain.structure import FeatureCounts

    used = {f for feats in assignment.values() for f in feats}
    per_class = max((len(f) for f in assignment.values()), default=0)
    return FeatureCounts(len(set(selected) | used), len(used), len(assignment), per_class)


# The rows of the closing table of a chiqpm run (CHiQPM's own figures).
BESIDE_QPM = ("accuracy", "pairs_sharing", "forced_pairs_sharing", "sid@5",
              "class_independence", "contrastiveness", "correlation")


def beside_qpm(summary) -> str:
    """The closing table of a chiqpm run: its metrics beside the run's QPM model of the same
    n and k (the most recent one), computed now, as ``qpm evaluate`` computes them."""
    from qpm import run_folder as rf
    from qpm.commands.evaluate import evaluate_models
    from qpm.metrics.model_eval import format_table
    from qpm.pipeline import distributed as dist
    from qpm.text import printable

    cfg = summary.config
    run = rf.open_run(summary.run_dir, cfg.data_root)
    mine = [m for m in run.models if m.model_type == "chiqpm" and m.folder == summary.variant_dir]

    def same_size(m) -> bool:
        c = run.config_of(m)
        return (c.n_features, c.per_class) == (cfg.n_features, cfg.per_class)

    qpms = [m for m in run.models if m.model_type == "qpm" and same_size(m)]
    qpms = [max(qpms, key=lambda m: m.file.stat().st_mtime_ns)] if qpms else []
    results, _, _, _ = evaluate_models(run, mine + qpms, dist.get_context().device,
                                       cfg.batch_size * 2)
    lines = [f"CHiQPM beside QPM on this run (rho {cfg.rho:g}; accuracy and SID@5 on the test "
             "set, the feature metrics on the training images):",
             format_table(results, BESIDE_QPM)]
    if not qpms:
        lines.append(f"(no QPM model with n={cfg.n_features}, k={cfg.per_class} in this run "
                     f"to compare with: qpm train --run-dir {printable(summary.run_dir)} "
                     f"--model-type qpm --n-features {cfg.n_features} --per-class "
                     f"{cfg.per_class} trains one)")
    return "\n".join(lines)


def format_summary(summary) -> str:
    from qpm import run_folder as rf
    from qpm.io import ArtifactError, read_json
    from qpm.run_folder.recipes import describe
    from qpm.text import printable

    m = summary.metrics
    cfg = summary.config
    out = [f"run folder: {printable(summary.run_dir)}", describe(cfg)]
    if summary.variant_dir != summary.run_dir:
        out.append(f"variant: {printable(summary.variant_dir.name)}")
    out += [f"dense accuracy: {_fmt_acc(m, 'dense')}   "
            f"{cfg.model_type} accuracy: {_fmt_acc(m, cfg.model_type)}   "
            f"(n={cfg.n_features}, k={cfg.per_class}, test top-1)"]
    out.append("seconds per stage: " + ", ".join(
        f"{s.name} {'-' if s.seconds is None else f'{s.seconds:.1f}'}"
        + (" (skipped)" if s.status == "skipped" else "") for s in summary.stages))
    path = summary.variant_dir / rf.ASSIGNMENT
    model_file = summary.variant_dir / rf.model_file(cfg.model_type)
    if path.exists():  # an assignment: qpm, chiqpm
        try:
            data = read_json(path)
            assignment = {int(c): feats for c, feats in data["assignment"].items()}
            names = rf.class_names(summary.run_dir)
        except (ArtifactError, KeyError, ValueError, TypeError) as exc:
            raise QPMError(f"{path} is unreadable ({exc}).", "Delete it and re-run.") from None
        counts = assignment_counts(assignment, data.get("selected_features", []))
        out.append(f"global explanation: {counts.line()}")
        if counts.warning():
            out.append(counts.warning())
        out += explanation_lines(assignment, names)
    elif model_file.exists():  # a baseline's layer
        from qpm.explain.structure import FeatureCounts
        from qpm.models.checkpoint import load_model

        model, _ = load_model(model_file)
        weight, _ = model.classifier.class_feature_weights()
        counts = FeatureCounts.of(weight.detach().numpy())
        out.append(f"{cfg.model_type} layer: {counts.line()}")
        if counts.warning():
            out.append(counts.warning())
    return "\n".join(out)
