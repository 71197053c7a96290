"""The run configuration: one dataclass, resolved against a recipe, saved as JSON.

``None`` means "the recipe's value" (:mod:`qpm.run_folder.recipes`; the starting point chooses
the recipe); :func:`resolve` fills them in, and :func:`TrainConfig.sized` the number of
features once the classes are known, so config.json always records the values actually used.
Which fields a stage depends on is declared next to the stages (:mod:`qpm.pipeline.stages`);
only those are compared when a run folder is re-used.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from qpm.assignment.backends import DEFAULT_SOLVER
from qpm.errors import QPMError

MAX_SEED = 2**32 - 1  # numpy's and torch's generators take any seed up to here
MAX_IMAGE_SIZE = 2048
MAX_EPOCHS = 10_000  # the reference trains 150 epochs at most; more is a typo, not a plan
MAX_INT = 2**31 - 1  # what torch and the solvers take as a count


@dataclass(frozen=True)
class TrainConfig:
    dataset: str = "mnist-5k"
    data_root: str | None = None
    recipe: str | None = None  # None: chosen by the starting point (recipes.choose_recipe)
    crop_gt: bool | None = None
    image_size: int | None = None
    augment: str | None = None  # training augmentation: reference, affine or none
    flip: bool | None = None  # horizontal flips in training
    transforms: str | None = None  # derived from dataset, crop, augment, flip (data.transforms)
    arch: str | None = None
    weights: str | None = None
    reduced_strides: bool | None = None  # ResNets: stride 1 in layer3 and layer4
    dense_training: bool | None = None  # False: the pretrained model is the dense model
    # a frozen backbone and the DINO-QPM adapter on it (qpm.models.adapter; recipe dino)
    frozen_backbone: bool | None = None
    adapter_layers: int | None = None  # 0: no adapter
    adapter_hidden: int | None = None
    adapter_features: int | None = None
    model_type: str = "qpm"
    reference_quirks: bool = False  # SLDD / Q-SENN exactly as the reference trains them
    # assignment
    solver: str = DEFAULT_SOLVER
    preset: str = "qpm"
    tau_rule: str = "paper"  # how the redundancy threshold is chosen (qpm.assignment.redundancy)
    n_features: int | None = None  # None: limits.default_n_features for the classes (sized)
    per_class: int = 5
    time_limit: float | None = None  # None: qpm.assignment.limits' default for the size
    mip_gap: float | None = None  # None: the recipe's (1e-4; dino: 5e-3, the reference's)
    locality_bias: str | None = None  # on (QPM) or off (DINO-QPM: no b in the objective)
    strict_solver: bool = False  # fail instead of falling back from Gurobi to HiGHS
    assignment: str | None = None  # a `qpm solve` result to use instead of solving
    rho: float = 0.5  # preset chiqpm: int(rho * C) closest class pairs share k-1 features
    # dense training
    epochs: int | None = None
    lr: float | None = None
    classifier_lr: float | None = None
    momentum: float | None = None
    weight_decay: float | None = None
    step_size: int | None = None
    gamma: float | None = None
    batch_size: int | None = None
    beta: float | None = None  # feature-diversity loss weight (0.196; dino: 0.5)
    optimizer: str | None = None  # sgd (StepLR) or adamw-schedulefree (dino), both stages
    # fine-tuning
    ft_epochs: int | None = None
    ft_lr: float | None = None
    ft_momentum: float | None = None
    ft_weight_decay: float | None = None
    ft_step_size: int | None = None
    ft_gamma: float | None = None
    ft_beta: float | None = None  # None: --beta (dino: 1.0)
    l1_maps: float | None = None  # fine-tuning: L1 on the selected feature maps (dino: 5)
    l1_features: float | None = None  # fine-tuning: L1 on the selected features (dino: 1)
    # runtime
    seed: int = 0
    device: str = "auto"
    workers: int = 0
    run_dir: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        fix = "Restore it, or start a fresh run folder with --run-dir."
        if not isinstance(data, dict):
            raise QPMError(f"config must be a JSON object, got {type(data).__name__}.", fix)
        known = {f.name: f.type for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise QPMError(f"config has unknown field(s): {', '.join(map(repr, unknown))}.",
                           "Remove them, or start a fresh run folder with --run-dir.")
        for name, value in data.items():
            if not _has_type(value, known[name]):
                raise QPMError(f"config field {name!r} must be {known[name]}, got "
                               f"{json_repr(value)}.", fix)
        return cls(**data)

    def resolve(self, weights_on_disk: Callable[[str, str], bool] | None = None
                ) -> TrainConfig:
        """Fill the recipe's values in and check them; the result has no None left except
        ``time_limit``, ``data_root``, ``n_features`` (see :meth:`sized`) and ``ft_beta``
        (None: the same as ``beta``). Without a recipe, the starting point chooses it
        (``weights_on_disk``: see :func:`~qpm.run_folder.recipes.choose_recipe`; a frozen
        backbone or a timm ViT gets ``dino``)."""
        from qpm.data import get_dataset
        from qpm.data.transforms import AUGMENTS, transform_name
        from qpm.run_folder.names import DENSE
        from qpm.run_folder.recipes import FROZEN_RUN, choose_recipe, get_recipe

        spec = get_dataset(self.dataset)
        name = self.recipe or choose_recipe(self.dataset, self.arch, self.weights,
                                            weights_on_disk, self.frozen_backbone).name
        recipe = get_recipe(name, self.dataset, self)
        updates: dict[str, Any] = {k: v for k, v in recipe.options(self.model_type).items()
                                   if getattr(self, k) is None}
        updates["recipe"] = recipe.name
        arch = recipe.arch if self.arch is None else self.arch
        weights, reduced = recipe.backbone(arch, self)
        for name, value in (("arch", arch), ("weights", weights), ("reduced_strides", reduced),
                            ("crop_gt", recipe.crop_gt), ("image_size", recipe.image_size),
                            ("dense_training", recipe.dense_training),
                            ("augment", recipe.augment), ("flip", recipe.flip)):
            if getattr(self, name) is None:
                updates[name] = value
        augment = self.augment or recipe.augment
        if augment not in AUGMENTS:
            raise QPMError(f"Unknown augmentation {json_repr(augment)}.",
                           f"Choose one of: {', '.join(AUGMENTS)}.")
        crop = self.crop_gt if self.crop_gt is not None else recipe.crop_gt
        flip = self.flip if self.flip is not None else recipe.flip
        updates["transforms"] = transform_name(spec.kind, spec.name, bool(crop), augment, flip)
        folder = Path("runs") / self.dataset / arch.replace(":", "_").replace("/", "_")
        if updates.get("weights", self.weights) == FROZEN_RUN:
            # a backbone trained here from scratch, frozen: the dense model of its own run
            updates["weights"] = str(folder / str(self.seed) / DENSE)
        if self.run_dir is None:
            if updates.get("frozen_backbone", self.frozen_backbone):
                folder = folder.with_name(folder.name + "-frozen")  # beside its unfrozen run
            updates["run_dir"] = str(folder / str(self.seed))
        cfg = replace(self, **updates)
        cfg.validate()
        return cfg

    def sized(self, num_classes: int, n_total: int) -> TrainConfig:
        """With ``n_features`` chosen for ``num_classes`` classes and a backbone of
        ``n_total`` features when it is not given (never more than can be used)."""
        if self.n_features is not None:
            return self
        from qpm.assignment.limits import default_n_features

        return replace(self, n_features=default_n_features(num_classes, self.per_class,
                                                           n_total))

    def validate(self) -> None:
        """One line per impossible value, before any work: every number finite and in range."""
        for name in FLOAT_FIELDS:
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise QPMError(f"{_flag(name)} must be a finite number, got {value}.",
                               f"Pass a finite {_flag(name)}.")
        positive = ("epochs", "ft_epochs", "batch_size", "step_size", "ft_step_size",
                    "n_features", "per_class", "image_size")
        for name in positive:
            value = getattr(self, name)
            if value is not None and value < 1 and not (name.endswith("epochs") and value == 0):
                raise QPMError(f"{_flag(name)} must be positive, got {value}.",
                               f"Pass a positive {_flag(name)}.")
        for name in ("epochs", "ft_epochs", "batch_size", "step_size", "ft_step_size",
                     "n_features", "per_class"):
            value, most = getattr(self, name), MAX_EPOCHS if "epochs" in name else MAX_INT
            if value is not None and value > most:
                raise QPMError(f"{_flag(name)} must be at most {most}, got {value}.",
                               f"Pass a smaller {_flag(name)}.")
        for name in ("lr", "classifier_lr", "ft_lr", "gamma", "ft_gamma"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise QPMError(f"{_flag(name)} must be > 0, got {value}.",
                               f"Pass a positive {_flag(name)}.")
        for name in ("momentum", "ft_momentum", "weight_decay", "ft_weight_decay"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise QPMError(f"{_flag(name)} must be >= 0, got {value}.",
                               f"Pass a non-negative {_flag(name)}.")
        from qpm.assignment.redundancy import check_tau_rule

        check_tau_rule(self.tau_rule)
        for name in ("beta", "ft_beta", "l1_maps", "l1_features"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise QPMError(f"{_flag(name)} must be >= 0, got {value}.",
                               f"Pass a non-negative {_flag(name)}.")
        check_choice("--optimizer", self.optimizer, OPTIMIZERS)
        check_choice("--locality-bias", self.locality_bias, ("on", "off"))
        for name in ("adapter_layers", "adapter_hidden", "adapter_features"):
            value = getattr(self, name)
            if value is not None and value < (0 if name == "adapter_layers" else 1):
                raise QPMError(f"{_flag(name)} must be "
                               f"{'>= 0' if name == 'adapter_layers' else 'positive'}, got "
                               f"{value}.", "Use e.g. --adapter-layers 4 --adapter-hidden 2048 "
                               "--adapter-features 512 (the reference's).")
        if self.frozen_backbone and self.adapter_layers == 0:
            raise QPMError("A frozen backbone needs the adapter: nothing else would learn.",
                           "Pass --adapter-layers 1 or more (the dino recipe: 4), or drop "
                           "--frozen-backbone.")
        if self.time_limit is not None and self.time_limit <= 0:
            raise QPMError(f"--time-limit must be positive, got {self.time_limit}.",
                           "Pass seconds, e.g. --time-limit 600.")
        if not 0 <= self.rho <= 1:
            raise QPMError(f"--rho must be in [0, 1], got {self.rho}.",
                           "Use e.g. --rho 0.5 (the CHiQPM reference's).")
        if self.mip_gap is not None and not 0 <= self.mip_gap < 1:
            raise QPMError(f"--mip-gap must be in [0, 1), got {self.mip_gap}.", "Use e.g. 1e-4.")
        if not 0 <= self.seed <= MAX_SEED:
            raise QPMError(f"--seed must be in 0..{MAX_SEED}, got {self.seed}.",
                           "Pass a smaller seed, e.g. --seed 0.")
        if self.image_size is not None and self.image_size > MAX_IMAGE_SIZE:
            raise QPMError(f"--image-size {self.image_size} is larger than {MAX_IMAGE_SIZE}.",
                           "Pass the input size in pixels, e.g. --image-size 448.")
        if self.workers < -1:
            raise QPMError(f"--workers must be -1 (automatic) or >= 0, got {self.workers}.",
                           "Use --workers -1.")
        check_device(self.device)
        if self.assignment is not None and not Path(self.assignment).is_file():
            raise QPMError(f"--assignment {self.assignment} is not a file.",
                           "Pass a result written by qpm solve --out RESULT.json.")

    def fingerprint(self, names: tuple[str, ...]) -> dict[str, Any]:
        """The values of ``names``: what a finished stage is compared by. A field added after
        run folders were written (:data:`ADDED_LATER`) is left out while it holds the value
        those folders were made with, so their records and variant names stay valid."""
        return {n: getattr(self, n) for n in names
                if n not in ADDED_LATER or getattr(self, n) != ADDED_LATER[n]}


# Fields added after run folders were written, with the value those folders were made with.
ADDED_LATER: dict[str, Any] = {
    "frozen_backbone": False, "adapter_layers": 0, "adapter_hidden": 2048,
    "adapter_features": 512, "optimizer": "sgd", "locality_bias": "on", "ft_beta": None,
    "l1_maps": 0.0, "l1_features": 0.0,
}
OPTIMIZERS = ("sgd", "adamw-schedulefree")


def check_choice(flag: str, value: Any, choices: tuple[str, ...]) -> None:
    if value is not None and value not in choices:
        raise QPMError(f"{flag} must be one of {', '.join(choices)}, got {json_repr(value)}.",
                       f"Pass {flag} {choices[0]}.")


# Not taken from a run folder's config.json by a re-run: where and how this process runs, and
# the one-off --assignment input (its n, k and preset are recorded and re-used).
RUNTIME_FIELDS = ("device", "workers", "run_dir", "assignment")


def rerun_settings(folder: str | Path, given: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The settings of a re-run of ``folder``: the values ``given`` on the command line, and
    for everything else those its config.json records, so only what is given can differ
    (as make re-uses its cache key). A given ``--recipe`` other than the recorded one brings
    its own values for what the recipe decides, a given ``--arch`` its own weights and strides.
    Returns the settings and a line saying what was re-used ("" for a new folder)."""
    from qpm.io import ArtifactError, read_json
    from qpm.run_folder.names import CONFIG
    from qpm.run_folder.recipes import ALIASES, RECIPE_FIELDS

    path = Path(folder) / CONFIG
    if not path.is_file():
        return dict(given), ""
    try:
        recorded = TrainConfig.from_dict(read_json(path)).to_dict()
    except (QPMError, ArtifactError) as exc:
        return dict(given), (f"{path} is unreadable ({exc.problem}); the command line and the "
                             "defaults decide every setting")
    if given.get("dataset", recorded["dataset"]) != recorded["dataset"]:
        return dict(given), ""  # other data: nothing of this folder applies (data.json says so)
    drop = {*RUNTIME_FIELDS, "transforms"}
    if "recipe" in given and (ALIASES.get(given["recipe"], given["recipe"])
                              != ALIASES.get(recorded["recipe"], recorded["recipe"])):
        drop |= set(RECIPE_FIELDS)
    if given.get("arch", recorded["arch"]) != recorded["arch"]:
        drop |= {"weights", "reduced_strides"}
    if given.get("model_type", recorded["model_type"]) != recorded["model_type"]:
        drop.add("reference_quirks")  # a baseline's setting, refused for the other types
    settings = {k: v for k, v in recorded.items() if k not in drop and k not in given}
    flags = [_flag(k) for k in given if k not in RUNTIME_FIELDS]
    line = (f"re-running {path.parent}: the settings not given come from its {CONFIG}"
            + (f" (given: {', '.join(flags)})" if flags else ""))
    return {**settings, **given}, line


def describe_diff(old: dict[str, Any], new: dict[str, Any]) -> str:
    parts = [f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in new if old.get(k) != new.get(k)]
    return ", ".join(parts)


FLOAT_FIELDS = ("time_limit", "mip_gap", "rho", "lr", "classifier_lr", "momentum",
                "weight_decay", "gamma", "beta", "ft_lr", "ft_momentum", "ft_weight_decay",
                "ft_gamma", "ft_beta", "l1_maps", "l1_features")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_device(device: str) -> None:
    """QPMError for a device name other than auto, cpu, cuda or cuda:N, or a missing GPU."""
    if not isinstance(device, str) or not (
            device in ("auto", "cpu", "cuda")
            or (device.startswith("cuda:") and device[5:].isdigit())):
        raise QPMError(f"Unknown device {json_repr(device)}.", "Use auto, cpu, cuda or cuda:N.")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise QPMError(f"--device {device} was requested but no CUDA GPU is visible.",
                           "Use --device cpu (or auto), or run on a machine with a GPU.")


def _has_type(value: Any, annotation: str) -> bool:
    """Whether a JSON value fits a field annotation such as ``"int | None"``."""
    allowed = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,),
               "None": (type(None),)}
    kinds = [t for part in str(annotation).split("|") for t in allowed[part.strip()]]
    if isinstance(value, bool) and bool not in kinds:
        return False  # JSON true is not a number here
    return isinstance(value, tuple(kinds))


def json_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
