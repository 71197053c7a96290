"""The stages of a run and the model-type registry.

A :class:`Stage` computes one artifact in the run folder from the config and the artifacts
before it. Shared stages (dense, features) are followed by the stages of the chosen model
type; ``register_model_type("qpm", fn)`` maps a name to ``fn() -> list[Stage]``, so the
baselines add "qsenn" and "sldd" that re-use dense.pt and features.npz.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from qpm.errors import QPMError
from qpm.models.backbones import Backbone, create_backbone
from qpm.models.checkpoint import load_model, model_state
from qpm.pipeline import distributed as dist
from qpm.pipeline import run_folder as rf
from qpm.pipeline.artifacts import ArtifactError, load_npz, save_npz, save_torch
from qpm.pipeline.config import TrainConfig
from qpm.pipeline.data import DataBundle, build_data
from qpm.pipeline.extraction import accuracy, extract
from qpm.pipeline.training import FitSettings, fit

# Config fields each stage's artifact depends on (its own and all upstream ones).
DENSE_FIELDS = ("dataset", "crop_gt", "image_size", "transforms", "arch", "weights",
                "reduced_strides", "dense_training", "epochs", "lr", "classifier_lr", "momentum",
                "weight_decay", "step_size", "gamma", "batch_size", "beta", "seed")
ASSIGNMENT_FIELDS = DENSE_FIELDS + ("solver", "preset", "tau_rule", "n_features", "per_class",
                                    "time_limit", "mip_gap")
FINETUNE_FIELDS = ASSIGNMENT_FIELDS + ("ft_epochs", "ft_lr", "ft_momentum", "ft_weight_decay",
                                       "ft_step_size", "ft_gamma")
FEATURES_REQUIRED = ("features", "labels", "test_features", "test_labels", "b", "class_names")
FEATURES_OPTIONAL = ("train_logits", "test_logits", "locality", "edge", "map_size")


@dataclass(frozen=True)
class Stage:
    """``run(ctx)`` writes ``artifact`` and returns metrics to merge into metrics.json.

    ``draw(ctx)`` optionally writes the picture ``figure`` from the finished artifact. The
    runner calls it only after the stage is recorded (and again whenever the picture is
    missing), and a drawing that fails costs a warning, never the stage's result.
    """

    name: str
    artifact: str
    fields: tuple[str, ...]
    run: Callable[[RunContext], dict[str, Any] | None]
    validate: Callable[[Path], None]
    main_only: bool = False  # True: rank 0 computes, the other ranks wait
    figure: str | None = None
    draw: Callable[[RunContext], None] | None = None


@dataclass
class RunContext:
    """What a stage may use: the config, the run folder, lazily built data and models."""

    config: TrainConfig
    run_dir: Path
    log: Callable[[str], None] = print
    hooks: dict[str, Callable] = field(default_factory=dict)
    identity: dict[str, Any] = field(default_factory=dict)  # set by the runner per stage
    _data: DataBundle | None = None
    _features: dict[str, np.ndarray] | None = None

    @property
    def device(self) -> torch.device:
        return dist.get_context().device

    @property
    def is_main(self) -> bool:
        return dist.get_context().is_main

    def path(self, name: str) -> Path:
        return self.run_dir / name

    def data(self) -> DataBundle:
        if self._data is None:
            c = self.config
            self._data = build_data(c.dataset, c.data_root, c.image_size, c.crop_gt)
        return self._data

    def features(self) -> dict[str, np.ndarray]:
        """The arrays of features.npz (train 'features'/'labels', 'test_*', 'b', ...)."""
        if self._features is None:
            self._features = load_npz(self.path(rf.FEATURES), FEATURES_REQUIRED,
                                      FEATURES_OPTIONAL)
        return self._features

    def load_dense(self) -> Backbone:
        model, _ = load_model(self.path(rf.DENSE), self.device)
        return model

    def fit_settings(self, finetune: bool) -> FitSettings:
        c = self.config
        if finetune:
            return FitSettings(c.ft_epochs, c.ft_lr, c.ft_momentum, c.ft_weight_decay,
                               c.ft_step_size, c.ft_gamma, c.batch_size, c.beta, None, c.seed,
                               c.workers)
        return FitSettings(c.epochs, c.lr, c.momentum, c.weight_decay, c.step_size, c.gamma,
                           c.batch_size, c.beta, c.classifier_lr, c.seed, c.workers)

    def train(self, model: Backbone, stage: str, settings: FitSettings, key: dict | None = None
              ) -> None:
        """The shared fit loop with this run's checkpoint file ``<stage>.ckpt``."""
        hook = self.hooks.get("on_epoch_end")
        fit(model, self.data().train, settings, ckpt_path=self.ckpt_path(stage), desc=stage,
            key={"stage": stage, **self.identity, **(key or {})}, log=self.log,
            on_epoch_end=None if hook is None else (lambda epoch: hook(stage, epoch)))

    def ckpt_path(self, stage: str) -> Path:
        return self.path(rf.checkpoint_file(stage))

    def evaluate(self, model: Backbone, desc: str = "test") -> float:
        return accuracy(model, self.data().test, batch_size=self.config.batch_size * 2,
                        workers=self.config.workers, desc=desc)

    def finetune(self, model: Backbone, stage: str, label: str) -> tuple[float, float]:
        """Test accuracy of a sparse model before and after the fine-tuning stage ``stage``."""
        before = self.evaluate(model, f"{stage} test (before fine-tuning)")
        self.log(f"{label} layer before fine-tuning: test accuracy {before:.2f}%")
        self.train(model, stage, self.fit_settings(finetune=True))
        acc = self.evaluate(model, f"{stage} test")
        self.log(f"{label} test accuracy {acc:.2f}%")
        return before, acc

    def class_names(self) -> list[str]:
        return [str(x) for x in self.features()["class_names"].tolist()]

    def save_model(self, name: str, model: Backbone, meta: dict[str, Any]) -> None:
        if self.is_main:
            save_torch(self.path(name), model_state(model, self.data().in_channels,
                                                    self.config.reduced_strides, meta))
        dist.barrier()

    def drop_ckpt(self, stage: str) -> None:
        if self.is_main:
            self.ckpt_path(stage).unlink(missing_ok=True)


# --- validators -------------------------------------------------------------------------------


def validate_model(path: Path) -> None:
    load_model(path)


def validate_features(path: Path) -> None:
    arrays = load_npz(path, FEATURES_REQUIRED)
    f, y = arrays["features"], arrays["labels"]
    if f.ndim != 2 or y.shape != (f.shape[0],) or arrays["b"].shape != (f.shape[1],):
        raise ArtifactError(f"{path} has inconsistent array shapes.",
                            f"Delete {path} and re-run.")


def validate_similarities(path: Path) -> None:
    from qpm.assignment.cache import load_similarities

    try:
        load_similarities(path)
    except QPMError as exc:
        raise ArtifactError(exc.problem, exc.fix) from None


def validate_assignment(path: Path) -> None:
    from qpm.assignment.result import AssignmentResult

    try:
        result = AssignmentResult.load_json(path)
    except QPMError as exc:
        raise ArtifactError(exc.problem, exc.fix) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(f"{path} is corrupt ({exc}).", f"Delete {path} and re-run.") from None
    if result.matrix is None or not result.selected_features:
        raise ArtifactError(f"{path} holds no assignment (status {result.status}).",
                            f"Delete {path} and re-run.")


# --- shared stages ----------------------------------------------------------------------------


def run_dense(ctx: RunContext) -> dict[str, Any]:
    c, data = ctx.config, ctx.data()
    # The initial weights come from the global generator: seed it so --seed decides them,
    # whatever ran before in this process.
    torch.manual_seed(c.seed)
    model = create_backbone(c.arch, c.weights, c.reduced_strides, data.in_channels,
                            data.num_classes, pretrained_head=not c.dense_training)
    model = model.to(ctx.device)
    if c.dense_training:
        ctx.train(model, "dense", ctx.fit_settings(finetune=False))
    else:
        ctx.log(f"dense: no dense training; the {c.weights} model with its classifier is the "
                "dense model")
    acc = ctx.evaluate(model, "dense test")
    ctx.log(f"dense test accuracy {acc:.2f}%")
    ctx.save_model(rf.DENSE, model, {"accuracy": acc, "class_names": data.class_names,
                                       "dataset": c.dataset, "image_size": data.image_size})
    ctx.drop_ckpt("dense")
    return {"dense": {"accuracy": acc}}


def run_features(ctx: RunContext) -> dict[str, Any]:
    from qpm.pipeline.bias import locality_bias

    data, bs, workers = ctx.data(), ctx.config.batch_size * 2, ctx.config.workers
    model = ctx.load_dense()
    # float32 throughout (no bf16 autocast): A, R and b come from these features.
    train = extract(model, data.train_eval, batch_size=bs, workers=workers, features=True,
                    locality=True, desc="features train", autocast=False)
    test = extract(model, data.test, batch_size=bs, workers=workers, features=True,
                   desc="features test", autocast=False)
    b = locality_bias(train.locality, train.edge)
    if ctx.is_main:
        save_npz(ctx.path(rf.FEATURES), features=train.features, labels=train.labels,
                 train_logits=train.logits, test_features=test.features, test_labels=test.labels,
                 test_logits=test.logits, b=b, locality=train.locality, edge=train.edge,
                 map_size=np.asarray(train.map_size, dtype=np.int64),
                 class_names=np.asarray(data.class_names, dtype=np.str_))
    dist.barrier()
    ctx._features = None
    return {"dense": {"accuracy": test.accuracy, "train_accuracy": train.accuracy}}


def shared_stages() -> list[Stage]:
    return [
        Stage("dense", rf.DENSE, DENSE_FIELDS, run_dense, validate_model),
        Stage("features", rf.FEATURES, DENSE_FIELDS, run_features, validate_features),
    ]


# --- model types ------------------------------------------------------------------------------

_MODEL_TYPES: dict[str, Callable[[], list[Stage]]] = {}


def register_model_type(name: str, stages: Callable[[], list[Stage]]) -> None:
    """``stages()`` returns the stages that follow dense and features for this model type."""
    _MODEL_TYPES[name] = stages


def _load_plugins() -> None:
    # Baselines register themselves on import; they are optional parts of the package.
    import importlib

    for module in ("qpm.baselines",):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name is None or not module.startswith(exc.name):
                raise


def model_type_names() -> list[str]:
    _load_plugins()
    return sorted(_MODEL_TYPES)


def pipeline_stages(model_type: str) -> list[Stage]:
    """Every stage of a run of ``model_type``, in order."""
    _load_plugins()
    if model_type not in _MODEL_TYPES:
        raise QPMError(f"Unknown model type {model_type!r}.",
                       f"Choose one of: {', '.join(sorted(_MODEL_TYPES))}.")
    return shared_stages() + list(_MODEL_TYPES[model_type]())


from qpm.pipeline import qpm_stages  # noqa: E402  (registers "qpm"; needs the names above)

__all__ = ["Stage", "RunContext", "register_model_type", "pipeline_stages", "qpm_stages"]
