"""What every stage is built from: :class:`Stage`, :class:`RunContext`, the validators of the
shared artifacts and the model-type registry.

A :class:`Stage` computes one artifact from the config and the artifacts before it. The
shared stages (dense, features; :mod:`.shared`) are followed by the stages of the chosen
model type, registered once where they are defined with ``@register_model_type(name)``.
A model type's stages marked ``per_variant`` write into the run's variant folder for the
config's setting (``variants/qpm-n50-k5-...``, :mod:`qpm.run_folder.variants`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from qpm import run_folder as rf
from qpm.data import DataBundle, build_data
from qpm.errors import QPMError
from qpm.io import ArtifactError
from qpm.models.adapter import set_cache_input
from qpm.models.backbones import Backbone
from qpm.models.checkpoint import load_model, model_state
from qpm.models.torch_files import save_torch
from qpm.pipeline import distributed as dist
from qpm.pipeline.extraction import accuracy
from qpm.pipeline.training import FitSettings, fit
from qpm.run_folder.config import TrainConfig

# Config fields the shared artifacts depend on (each later stage adds its own).
DENSE_FIELDS = ("dataset", "crop_gt", "image_size", "transforms", "arch", "weights",
                "reduced_strides", "dense_training", "epochs", "lr", "classifier_lr", "momentum",
                "weight_decay", "step_size", "gamma", "batch_size", "beta", "seed",
                "frozen_backbone", "adapter_layers", "adapter_hidden", "adapter_features",
                "optimizer")
FINETUNE_ONLY = ("ft_epochs", "ft_lr", "ft_momentum", "ft_weight_decay", "ft_step_size",
                 "ft_gamma", "ft_beta", "l1_maps", "l1_features")
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
    per_variant: bool = False  # True: its files live in the variant's folder
    folder: str = ""  # where, relative to the run folder (the runner sets it)

    def path(self, run_dir: Path) -> Path:
        return run_dir / self.folder / self.artifact


@dataclass
class RunContext:
    """What a stage may use: the config, the run folder, lazily built data and models.

    ``on_epoch_end(stage, epochs_done)`` runs after each training epoch's checkpoint (to
    report progress, or to stop); ``glm`` sets the baselines' glm-saga path (None: the
    reference's settings).
    """

    config: TrainConfig
    run_dir: Path
    log: Callable[[str], None] = print
    on_epoch_end: Callable[[str, int], None] | None = None
    glm: Any = None
    variant_dir: Path | None = None  # the config's variant folder (set by the runner)
    folder: Path | None = None  # the folder of the stage that runs now (set by the runner)
    identity: dict[str, Any] = field(default_factory=dict)  # set by the runner per stage
    _data: DataBundle | None = None
    _inputs: DataBundle | None = None
    _features: dict[str, np.ndarray] | None = None

    @property
    def device(self) -> torch.device:
        return dist.get_context().device

    @property
    def is_main(self) -> bool:
        return dist.get_context().is_main

    def path(self, name: str) -> Path:
        """A shared file of the run folder (dense.pt, features.npz, ...)."""
        return self.run_dir / name

    def variant_path(self, name: str) -> Path:
        """A file of the config's variant (assignment.json, qpm.pt, ...)."""
        return (self.variant_dir or self.run_dir) / name

    def data(self) -> DataBundle:
        if self._data is None:
            c = self.config
            self._data = build_data(c.dataset, c.data_root, c.image_size, c.crop_gt,
                                    c.transforms)
        return self._data

    def inputs(self, model: Backbone | None = None) -> DataBundle:
        """What the models of this run read: :meth:`data`'s images, or on a frozen backbone
        the backbone's outputs, computed once into the run folder's token cache (from
        ``model``'s backbone, else dense.pt's, when the cache needs filling)."""
        if not self.config.frozen_backbone:
            return self.data()
        if self._inputs is None:
            from qpm.pipeline.token_cache import cached_inputs

            self._inputs = cached_inputs(self, model)
        return self._inputs

    def feed(self, model: Backbone) -> Backbone:
        """``model`` set to read :meth:`inputs` (a frozen backbone's model: the cache)."""
        if self.config.frozen_backbone:
            set_cache_input(model, True)
        return model

    def features(self) -> dict[str, np.ndarray]:
        """The arrays of features.npz (train 'features'/'labels', 'test_*', 'b', ...)."""
        if self._features is None:
            self._features = rf.read_arrays(self.path(rf.FEATURES), FEATURES_REQUIRED,
                                            FEATURES_OPTIONAL)
        return self._features

    def load_dense(self) -> Backbone:
        """dense.pt, set to read :meth:`inputs`."""
        model, _ = load_model(self.path(rf.DENSE), self.device)
        return self.feed(model)

    def fit_settings(self, finetune: bool) -> FitSettings:
        c = self.config
        if finetune:  # --reference-quirks (baselines only): the reference drops no batch
            beta = c.beta if c.ft_beta is None else c.ft_beta
            return FitSettings(c.ft_epochs, c.ft_lr, c.ft_momentum, c.ft_weight_decay,
                               c.ft_step_size, c.ft_gamma, c.batch_size, beta, None, c.seed,
                               c.workers, drop_last=not c.reference_quirks,
                               optimizer=c.optimizer, l1_maps=c.l1_maps,
                               l1_features=c.l1_features)
        return FitSettings(c.epochs, c.lr, c.momentum, c.weight_decay, c.step_size, c.gamma,
                           c.batch_size, c.beta, c.classifier_lr, c.seed, c.workers,
                           optimizer=c.optimizer)

    def train(self, model: Backbone, stage: str, settings: FitSettings, key: dict | None = None
              ) -> None:
        """The shared fit loop with this run's checkpoint file ``<stage>.ckpt``."""
        hook = self.on_epoch_end
        fit(model, self.inputs().train, settings, ckpt_path=self.ckpt_path(stage), desc=stage,
            key={"stage": stage, **self.identity, **(key or {})}, log=self.log,
            on_epoch_end=None if hook is None else (lambda epoch: hook(stage, epoch)))

    def ckpt_path(self, stage: str) -> Path:
        return (self.folder or self.run_dir) / rf.checkpoint_file(stage)

    def evaluate(self, model: Backbone, desc: str = "test") -> float:
        return accuracy(model, self.inputs().test, batch_size=self.config.batch_size * 2,
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

    def save_model(self, path: Path, model: Backbone, meta: dict[str, Any]) -> None:
        """Write a model file; its meta also describes the training images (``inputs``), so
        that ``qpm predict`` can flag an input unlike them."""
        if self.is_main:
            from qpm.data.profile import profile_split

            inputs = profile_split(self.data().train.split).to_dict()
            save_torch(path, model_state(model, self.data().in_channels,
                                         self.config.reduced_strides,
                                         {**meta, "inputs": inputs}))
        dist.barrier()

    def drop_ckpt(self, stage: str) -> None:
        if self.is_main:
            self.ckpt_path(stage).unlink(missing_ok=True)


# --- validators -------------------------------------------------------------------------------


def validate_model(path: Path) -> None:
    load_model(path)


def validate_features(path: Path) -> None:
    arrays = rf.read_arrays(path, FEATURES_REQUIRED)
    f, y = arrays["features"], arrays["labels"]
    if f.ndim != 2 or y.shape != (f.shape[0],) or arrays["b"].shape != (f.shape[1],):
        raise ArtifactError(f"{path} has inconsistent array shapes.",
                            f"Delete {path} and re-run.")


# --- model types ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelType:
    """``stages(cfg)``: the stages after dense and features; ``variant(cfg)``: the config
    values that name the variant folder its ``per_variant`` stages write into;
    ``reference_quirks``: whether it honours ``--reference-quirks`` (else that is refused)."""

    name: str
    stages: Callable[[TrainConfig], list[Stage]]
    variant: Callable[[TrainConfig], dict[str, Any]]
    reference_quirks: bool = False


_MODEL_TYPES: dict[str, ModelType] = {}


def sized(cfg: TrainConfig) -> dict[str, Any]:
    """The variant of a model type that depends on n and k only."""
    return {"n_features": cfg.n_features, "per_class": cfg.per_class}


def register_model_type(name: str, variant: Callable[[TrainConfig], dict[str, Any]] = sized,
                        reference_quirks: bool = False) -> Callable:
    """Decorate ``stages(cfg) -> list[Stage]`` to make model type ``name``
    (``reference_quirks=True``: its stages follow ``cfg.reference_quirks``)."""

    def register(stages: Callable[[TrainConfig], list[Stage]]) -> Callable:
        _MODEL_TYPES[name] = ModelType(name, stages, variant, reference_quirks)
        return stages

    return register


def model_type_names() -> list[str]:
    return sorted(_MODEL_TYPES)


def get_model_type(name: str) -> ModelType:
    if name not in _MODEL_TYPES:
        raise QPMError(f"Unknown model type {name!r}.",
                       f"Choose one of: {', '.join(model_type_names())}.")
    return _MODEL_TYPES[name]


def check_reference_quirks(cfg: TrainConfig) -> None:
    """QPMError when ``--reference-quirks`` is asked of a model type that does not honour it."""
    if cfg.reference_quirks and not get_model_type(cfg.model_type).reference_quirks:
        honour = [m.name for m in _MODEL_TYPES.values() if m.reference_quirks]
        raise QPMError(f"--reference-quirks applies to --model-type {' or '.join(sorted(honour))}"
                       f", not {cfg.model_type}.", "Drop --reference-quirks.")
