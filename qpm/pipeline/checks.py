"""What ``qpm train`` checks before any training: the data readable, the weights there, the
sizes possible, the preset known (argparse checks the solver name); each a one-line error
naming the fix. It also chooses n when it is not given, since that needs the number of
classes and the backbone's features."""

from __future__ import annotations

from qpm.errors import QPMError
from qpm.pipeline.stages import RunContext
from qpm.run_folder.config import TrainConfig


def check_before_training(cfg: TrainConfig, ctx: RunContext,
                          notes: list[str] | None = None) -> TrainConfig:
    """Cheap checks before any training: data readable, feature counts possible. Returns
    ``cfg`` with n chosen (:meth:`TrainConfig.sized`) when it was not given, and says so in
    ``notes`` (printed once every check has passed: bad input stays one line)."""
    from math import comb

    from qpm.models.backbones import check_weights

    data = ctx.data()  # a missing or malformed dataset fails here, not after training
    if data.num_classes < 2:
        raise QPMError(f"Dataset {cfg.dataset} has {data.num_classes} class; a classifier "
                       "needs at least 2.", "Point --data-root at a folder with 2 or more "
                       "class folders.")
    if cfg.frozen_backbone:
        check_frozen_weights(cfg)
    check_weights(cfg.arch, cfg.weights)
    if not cfg.dense_training and cfg.weights in (None, "", "none"):
        raise QPMError("--no-dense-training uses the pretrained model as the dense model, but "
                       "no weights are given.", "Pass --weights (e.g. IMAGENET1K_V1).")
    n_total = _probe_backbone(cfg, data.in_channels)
    if cfg.n_features is None:
        cfg = cfg.sized(data.num_classes, n_total)
        if notes is not None:
            notes.append(f"n = {cfg.n_features} features (--n-features not given: 50, but at "
                         f"most {data.num_classes} classes x k={cfg.per_class} and the "
                         f"{n_total} features of {cfg.arch})")
    if cfg.n_features > n_total:
        raise QPMError(f"--n-features {cfg.n_features} is larger than the {n_total} "
                       f"features of {cfg.arch}.", f"Use --n-features {n_total} or fewer.")
    if cfg.per_class > cfg.n_features:
        raise QPMError(f"--per-class {cfg.per_class} is larger than --n-features "
                       f"{cfg.n_features}.", "Lower --per-class or raise --n-features.")
    if cfg.model_type in ("qpm", "chiqpm"):
        from qpm.assignment.forced_pairs import check_rho
        from qpm.assignment.presets import get_preset

        rules = get_preset(cfg.preset).rules  # also rejects unknown presets
        if rules.unique_columns and comb(cfg.n_features, cfg.per_class) < data.num_classes:
            raise QPMError(
                f"{data.num_classes} classes cannot get distinct sets of {cfg.per_class} of "
                f"{cfg.n_features} features.", "Raise --n-features or --per-class.")
        if rules.forced_pairs:  # the pairs themselves need the similarities: checked then
            check_rho(cfg.rho, data.num_classes, cfg.per_class)
    return cfg


def check_frozen_weights(cfg: TrainConfig) -> None:
    """A frozen backbone from the dense model of its unfrozen run needs that run first."""
    from pathlib import Path

    from qpm import run_folder as rf

    path = Path(cfg.weights)
    if path.name == rf.DENSE and not path.is_file():
        raise QPMError(f"The frozen backbone is the dense model of {path.parent}, which is not "
                       f"trained yet ({path} does not exist).",
                       f"Train it first (qpm train --dataset {cfg.dataset} --arch {cfg.arch} "
                       f"--run-dir {path.parent}), or pass --weights FILE.")


def _probe_backbone(cfg: TrainConfig, in_channels: int) -> int:
    """The backbone's feature count, after one forward pass at --image-size (a size too
    small for its downsampling fails here, not in the first training step)."""
    import torch

    from qpm.models.adapter import AdapterSpec, create_model

    model = create_model(cfg.arch, "none", cfg.reduced_strides, in_channels, 2,
                         adapter=AdapterSpec.of(cfg), frozen=bool(cfg.frozen_backbone)).eval()
    size = int(cfg.image_size)
    try:
        with torch.no_grad():
            model(torch.zeros(1, in_channels, size, size))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise QPMError(f"--image-size {size} is too small for {cfg.arch} ({first}).",
                       "Pass a larger --image-size, e.g. 32 for small-cnn or 224 for a "
                       "ResNet.") from None
    return model.n_features
