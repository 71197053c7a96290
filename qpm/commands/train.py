"""``qpm train``: data -> dense model -> features -> assignment -> fine-tuned QPM model."""

from __future__ import annotations

import argparse
from itertools import combinations

from qpm import logs
from qpm.errors import QPMError

log = logs.get("train")

DEFAULTS_NOTE = "(default: the recipe's)"


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "train",
        help="train a QPM model end to end (resumable run folder)",
        description="Train the dense model, extract features, solve the feature-class "
        "assignment and fine-tune the QPM model. Artifacts go to runs/<dataset>/<arch>/<seed>/ "
        "(or --run-dir); re-running the same command skips finished stages and resumes an "
        "interrupted training from its last epoch. The default (mnist-5k, small-cnn) runs "
        "offline on a CPU in minutes. What is not given comes from the --recipe: paper (the "
        "QPM reference's settings) for the natural-image sets, offline for the digit sets.",
    )
    d = p.add_argument_group("data")
    d.add_argument("--dataset", default="mnist-5k",
                   help="mnist-5k (offline), digits, cub2011, stanford-cars, "
                   "travelingbirds, imagenet or imagefolder")
    d.add_argument("--data-root", metavar="DIR", help="dataset folder (not needed offline)")
    d.add_argument("--recipe", help="paper (default for natural images: the reference's "
                   "settings), offline (default for the digit sets) or dino (DINO-QPM's "
                   "settings; default for a frozen backbone or a timm ViT)")
    d.add_argument("--crop-gt", action=argparse.BooleanOptionalAction, default=None,
                   help="crop CUB/TravelingBirds images to their boxes (default: the recipe's; "
                   "paper: yes)")
    d.add_argument("--image-size", type=int, metavar="PX",
                   help="input size (default: the recipe's; paper: 224)")
    d.add_argument("--workers", type=int, default=-1,
                   help="data-loading processes per GPU process (default -1: the node's CPUs "
                   "split over its processes, at most 8; CPU runs always load in-process)")
    m = p.add_argument_group("model")
    m.add_argument("--arch", help="small-cnn, resnet18, resnet34, resnet50 or timm:<name> "
                   "(default: the recipe's; paper: resnet50, offline: small-cnn)")
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
    m.add_argument("--model-type", default="qpm", help="final layer: qpm (or a baseline)")
    a = p.add_argument_group("assignment")
    from qpm.assignment.backends import DEFAULT_SOLVER, solver_names

    a.add_argument("--solver", default=DEFAULT_SOLVER, choices=solver_names(),
                   help="gurobi falls back to HiGHS when its licence cannot take the model")
    a.add_argument("--preset", help="constraint preset (see qpm solve; default: qpm, with "
                   "--assignment: the result's)")
    a.add_argument("--tau-rule", default="paper", help="how the redundancy threshold is chosen: "
                   "paper (default, the reference's search) or tight (see qpm solve)")
    a.add_argument("--n-features", type=int,
                   help="features kept (n; default: 50, with --assignment: the result's)")
    a.add_argument("--per-class", type=int,
                   help="features per class (k; default: 5, with --assignment: the result's)")
    from qpm.assignment.limits import LARGE_CELLS, LARGE_TIME_LIMIT

    a.add_argument("--time-limit", type=float, metavar="S",
                   help=f"seconds for the solve (default: none; {LARGE_TIME_LIMIT:.0f} s for "
                   f"problems of {LARGE_CELLS:,} or more features x classes, printed when used)")
    a.add_argument("--mip-gap", type=float, help="relative MIP gap (default: the recipe's; "
                   "1e-4, dino: 5e-3)")
    a.add_argument("--locality-bias", choices=("on", "off"),
                   help="the locality term b in the objective (default: the recipe's; on, "
                   "dino: off)")
    a.add_argument("--strict-solver", action="store_true",
                   help="fail instead of falling back to HiGHS when Gurobi cannot take the model")
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
    t.add_argument("--beta", type=float, help="feature-diversity loss weight (0.196; dino: "
                   "0.5)")
    t.add_argument("--ft-beta", type=float, help="its weight in fine-tuning (default: --beta; "
                   "dino: 1.0)")
    t.add_argument("--optimizer", choices=("sgd", "adamw-schedulefree"),
                   help="sgd with a step schedule, or schedule-free AdamW (the schedulefree "
                   "package; dino)")
    t.add_argument("--l1-maps", type=float, metavar="W", help="fine-tuning: L1 penalty on the "
                   "final layer's feature maps (dino: 5)")
    t.add_argument("--l1-features", type=float, metavar="W", help="fine-tuning: L1 penalty on "
                   "its pooled features (dino: 1)")
    t.add_argument("--seed", type=int, default=0, help="random seed (also names the run folder)")
    t.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--run-dir", metavar="DIR", help="run folder (default runs/DATASET/ARCH/SEED)")
    p.add_argument("--force", metavar="STAGE",
                   help="recompute STAGE and every later one (dense, features, similarities, "
                   "assignment, qpm; sldd-layer, sldd; qsenn)")
    return p


def config_from_args(args: argparse.Namespace):
    from qpm.run_folder.config import TrainConfig

    n, k, preset = given_problem(args)
    return TrainConfig(
        dataset=args.dataset, data_root=args.data_root, recipe=args.recipe,
        crop_gt=args.crop_gt, image_size=args.image_size, arch=args.arch, weights=args.weights,
        reduced_strides=args.reduced_strides, dense_training=args.dense_training,
        frozen_backbone=args.frozen_backbone, adapter_layers=args.adapter_layers,
        adapter_hidden=args.adapter_hidden, adapter_features=args.adapter_features,
        model_type=args.model_type, solver=args.solver,
        preset=preset, tau_rule=args.tau_rule, n_features=n, per_class=k,
        time_limit=args.time_limit, mip_gap=args.mip_gap, strict_solver=args.strict_solver,
        assignment=args.assignment, locality_bias=args.locality_bias,
        epochs=args.epochs, lr=args.lr,
        classifier_lr=args.classifier_lr, batch_size=args.batch_size, beta=args.beta,
        ft_beta=args.ft_beta, optimizer=args.optimizer, l1_maps=args.l1_maps,
        l1_features=args.l1_features,
        ft_epochs=args.ft_epochs, ft_lr=args.ft_lr, seed=args.seed, device=args.device,
        workers=args.workers, run_dir=args.run_dir,
    )


def given_problem(args: argparse.Namespace) -> tuple[int, int, str]:
    """n, k and the preset: the flags', else those of the --assignment result, else 50, 5, qpm.
    Flags that contradict the given result are one clear line."""
    given = {"n_features": args.n_features, "per_class": args.per_class, "preset": args.preset}
    if args.assignment is None:
        return args.n_features or 50, args.per_class or 5, args.preset or "qpm"
    if args.model_type != "qpm":
        raise QPMError(f"--assignment is a QPM assignment; --model-type {args.model_type} "
                       "makes its own.", "Drop --assignment, or use --model-type qpm.")
    from qpm.assignment.result import AssignmentResult

    result = AssignmentResult.load_json(args.assignment)
    if result.matrix is None or not result.selected_features:
        raise QPMError(f"{args.assignment} holds no assignment (status "
                       f"{result.status}).", "Pass a result that qpm solve finished.")
    classes = result.matrix.shape[1]
    found = {"n_features": len(result.selected_features),
             "per_class": int(round(result.matrix.sum() / classes)), "preset": result.preset}
    for key, value in given.items():
        if value is not None and value != found[key]:
            flag = "--" + key.replace("_", "-")
            raise QPMError(f"{flag} {value} contradicts --assignment "
                           f"{args.assignment}, which has {found[key]}.",
                           f"Drop {flag}: the result decides it.")
    return found["n_features"], found["per_class"], found["preset"]


def _early_lock(args: argparse.Namespace):
    """The lock of an existing --run-dir, taken before torch is even imported, so a second
    writer is refused at once (the runner takes it, re-entrantly, in any case)."""
    import os
    from pathlib import Path

    from qpm.run_folder import RunLock

    if not args.run_dir or not Path(args.run_dir).is_dir() or os.environ.get("RANK", "0") != "0":
        return None
    return RunLock(args.run_dir).acquire()


def run(args: argparse.Namespace) -> int:
    lock = _early_lock(args)
    from qpm.pipeline import distributed as dist
    from qpm.pipeline.run import run_pipeline

    try:
        summary = run_pipeline(config_from_args(args), log=log.info, force=args.force)
        if dist.get_context().is_main:
            print(format_summary(summary))
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


def beside_unfrozen(summary) -> list[str]:
    """A frozen backbone taken from another run's dense.pt: that run's accuracies of the
    same model type at the same n and k (its backbone fine-tuned), beside this run's (frozen,
    with the adapter)."""
    from pathlib import Path

    from qpm import run_folder as rf
    from qpm.io import ArtifactError, read_json
    from qpm.text import printable

    cfg = summary.config
    source = Path(cfg.weights or "")
    if not cfg.frozen_backbone or source.name != rf.DENSE or not source.is_file():
        return []
    try:
        run = rf.open_run(source.parent)
        same = [m for m in run.models if m.model_type == cfg.model_type
                and (run.config_of(m).n_features, run.config_of(m).per_class)
                == (cfg.n_features, cfg.per_class)]  # the same n and k, latest first
        model = max(same, key=lambda m: m.file.stat().st_mtime_ns)
        theirs = read_json(model.folder / rf.METRICS).get(cfg.model_type, {})
        dense = read_json(run.path / rf.METRICS).get("dense", {})
    except (QPMError, ArtifactError, AttributeError, ValueError, OSError):
        return []
    mine = summary.metrics
    label = f", variant {model.variant}" if model.variant else ""
    return [f"the same backbone fine-tuned ({printable(run.path)}{label}): dense "
            f"{_fmt_acc({'d': dense}, 'd')}   {cfg.model_type} {_fmt_acc({'m': theirs}, 'm')}",
            f"frozen backbone + adapter (this run): dense {_fmt_acc(mine, 'dense')}   "
            f"{cfg.model_type} {_fmt_acc(mine, cfg.model_type)}"]


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
    out += beside_unfrozen(summary)
    out.append("seconds per stage: " + ", ".join(
        f"{s.name} {'-' if s.seconds is None else f'{s.seconds:.1f}'}"
        + (" (skipped)" if s.status == "skipped" else "") for s in summary.stages))
    path = summary.variant_dir / rf.ASSIGNMENT
    model_file = summary.variant_dir / rf.model_file(cfg.model_type)
    if cfg.model_type == "qpm" and path.exists():
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
