"""Recipes: everything ``qpm train`` uses for what the command line leaves open.

Three recipes, for the starting points a backbone can have:

- ``paper`` fine-tunes a pretrained backbone with the QPM reference implementation's settings
  (``main.py``, ``configs/``, ``get_data.py``): ResNet-50 from the torchvision ImageNet weights
  IMAGENET1K_V1, stride 1 in layer3 and layer4 (28 x 28 maps at 224 px), CUB and
  TravelingBirds cropped to their boxes, 224 px, the reference's transforms (with horizontal
  flips) and schedules; ImageNet skips dense training and fine-tunes the pretrained model.
- ``scratch`` trains a backbone from scratch: a small CNN, a short schedule with a larger
  learning rate, and an augmentation that never changes what an image shows (a small random
  rotation, zoom and shift; no flip, which would turn a "b" into a "d"). ``offline``, its
  name before, is accepted for it.
- ``dino`` is DINO-QPM's (its configs ``qpm/dinov2.yaml`` and ``main_training.yaml``): a
  frozen backbone (DINOv2 ViT-B/14 with registers, timm's weights file) with the adapter,
  schedule-free AdamW, L1 on the fine-tuned feature maps and features, no locality bias, a
  0.5% MIP gap; the default whenever the backbone is frozen or a timm ViT.

Which one applies when ``--recipe`` is not given follows from the starting point
(:func:`choose_recipe`), not from the dataset's name. A value given on the command line (or in
the config) always wins over the recipe's.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

from qpm.errors import QPMError

# The reference's schedule for CUB, TravelingBirds and Stanford Cars (configs/optim_params.py,
# training/optim.py, get_data.py): dense lr, weight decay, step, gamma, epochs, classifier lr
# and momentum; fine-tuning the same with momentum 0.95; batch 16.
PAPER_SCHEDULE: dict[str, float | int] = {
    "epochs": 150, "lr": 0.005, "classifier_lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4,
    "step_size": 30, "gamma": 0.4, "batch_size": 16,
    "ft_epochs": 40, "ft_lr": 1e-4, "ft_momentum": 0.95, "ft_weight_decay": 5e-4,
    "ft_step_size": 10, "ft_gamma": 0.4,
}
# ImageNet: no dense training (the pretrained model is used directly), batch 64, and the
# fine-tuning learning rate the dense schedule would end at: 0.005 * 0.4 ** 4.
IMAGENET_SCHEDULE: dict[str, float | int] = {
    **PAPER_SCHEDULE, "epochs": 0, "batch_size": 64,
    "ft_lr": PAPER_SCHEDULE["lr"] * PAPER_SCHEDULE["gamma"] ** ((150 - 30) // 30),
}
# From scratch (the small CNN on the digit sets, 12 + 6 epochs on a CPU): short, with a larger
# learning rate.
SCRATCH_SCHEDULE: dict[str, float | int] = {
    "epochs": 12, "lr": 0.05, "classifier_lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4,
    "step_size": 5, "gamma": 0.4, "batch_size": 64,
    "ft_epochs": 6, "ft_lr": 0.005, "ft_momentum": 0.9, "ft_weight_decay": 5e-4,
    "ft_step_size": 3, "ft_gamma": 0.4,
}
# What every recipe leaves as QPM has it (the dino recipe changes them).
PLAIN_OPTIONS: dict[str, object] = {
    "frozen_backbone": False, "adapter_layers": 0, "adapter_hidden": 2048,
    "adapter_features": 512, "optimizer": "sgd", "beta": 0.196, "mip_gap": 1e-4,
    "locality_bias": "on", "l1_maps": 0.0, "l1_features": 0.0,
}
# The reference bounds every solve (3 h a round, Gurobi); here the project's limit for large
# problems, which a CUB-sized adapter (512 x 200) gets anyway. It also bounds small problems
# with many more features than classes use (n > C*k), where the bound closes slowly without b.
DINO_TIME_LIMIT = 600.0
# DINO-QPM's configs/models/qpm/dinov2.yaml: dense 25 epochs lr 1e-3 wd 7e-4 batch 32, the
# diversity loss 0.5; fine-tuning 25 epochs lr 5e-3 wd 8e-4, diversity 1.0, L1 5 on the
# selected maps and 1 on the selected features; schedule-free AdamW (momentum, step and gamma
# are recorded as the config has them, unused by it); no locality bias, MIP gap 0.5%.
DINO_OPTIONS: dict[str, object] = {
    "frozen_backbone": True, "adapter_layers": 4, "adapter_hidden": 2048,
    "adapter_features": 512, "optimizer": "adamw-schedulefree", "beta": 0.5, "ft_beta": 1.0,
    "mip_gap": 5e-3, "time_limit": DINO_TIME_LIMIT, "locality_bias": "off", "l1_maps": 5.0,
    "l1_features": 1.0,
    "epochs": 25, "lr": 1e-3, "classifier_lr": 1e-3, "momentum": 0.9, "weight_decay": 7e-4,
    "step_size": 10, "gamma": 0.04, "batch_size": 32,
    "ft_epochs": 25, "ft_lr": 5e-3, "ft_momentum": 0.95, "ft_weight_decay": 8e-4,
    "ft_step_size": 10, "ft_gamma": 0.04,
}
# Its SLDD and Q-SENN configs (sldd/dinov2.yaml, qsenn/dinov2.yaml) fine-tune without the L1
# penalties and with the diversity loss at 0.196; SLDD for 50 epochs. (Their dense settings
# differ too, 40 epochs at 0.196; here the dense model is shared: QPM's.)
DINO_FINETUNE: dict[str, dict[str, object]] = {
    "sldd": {"ft_beta": 0.196, "l1_maps": 0.0, "l1_features": 0.0, "ft_epochs": 50},
    "qsenn": {"ft_beta": 0.196, "l1_maps": 0.0, "l1_features": 0.0},
}
# On the digit sets (CPU): the same recipe on the small CNN of the offline run, with an
# adapter and schedule sized for two cores.
DINO_OFFLINE_OPTIONS: dict[str, object] = {
    **DINO_OPTIONS, "adapter_hidden": 256, "adapter_features": 128, "epochs": 6,
    "ft_epochs": 6, "batch_size": 64,
}
DINO_ARCH = "timm:vit_base_patch14_reg4_dinov2"  # the reference's default (dinov2, base_reg)
PRETRAINED = "pretrained"  # timm's weights file of the name (qpm.models.vit), read from disk
FROZEN_RUN = "frozen-run"  # the weights: the dense model of the run that trained this backbone
PAPER_WEIGHTS = "IMAGENET1K_V1"  # the reference loads torchvision's original ResNet weights
CROPPED = ("cub2011", "travelingbirds")  # the reference's --cropGT default applies to these
ALIASES = {"offline": "scratch"}  # earlier names, still accepted (and recorded in old folders)
# What a recipe decides (besides the schedule): a re-run that changes the recipe re-decides it.
RECIPE_FIELDS = ("arch", "weights", "reduced_strides", "crop_gt", "image_size",
                 "dense_training", "augment", "flip", *PAPER_SCHEDULE, *PLAIN_OPTIONS,
                 *DINO_OPTIONS)


@dataclass(frozen=True)
class Recipe:
    name: str
    arch: str
    weights: str  # for torchvision ResNets; other architectures start from scratch
    reduced_strides: bool  # torchvision ResNets: stride 1 in layer3 and layer4
    crop_gt: bool
    image_size: int
    dense_training: bool  # False: use the pretrained model (and its classifier) as dense model
    schedule: dict[str, float | int] = field(default_factory=dict)
    augment: str = "reference"  # the training augmentation (qpm.data.transforms.AUGMENTS)
    flip: bool = True  # horizontal flips in training
    extra: dict[str, object] = field(default_factory=dict)  # more options, over PLAIN_OPTIONS
    # model type -> what its fine-tuning stages do differently (the dino recipe's baselines)
    per_model_type: dict[str, dict[str, object]] = field(default_factory=dict)

    def options(self, model_type: str = "qpm") -> dict[str, object]:
        """Every config value the recipe sets besides the backbone and the data's."""
        return {**PLAIN_OPTIONS, **self.schedule, **self.extra,
                **self.per_model_type.get(model_type, {})}

    def backbone(self, arch: str, cfg=None) -> tuple[str, bool]:
        """(weights, reduced strides) for ``arch``: the recipe's for the torchvision ResNets,
        none and no stride change for the others (small-cnn, timm). A frozen backbone
        starts from pretrained weights: timm's file for timm names, and for a backbone
        trained from scratch (small-cnn) the dense model of its own unfrozen run."""
        frozen = self.options()["frozen_backbone"]
        if cfg is not None and cfg.frozen_backbone is not None:
            frozen = cfg.frozen_backbone
        if arch.startswith("resnet"):
            weights = PAPER_WEIGHTS if frozen and self.weights == "none" else self.weights
            return weights, self.reduced_strides
        if frozen:
            return (PRETRAINED if arch.startswith("timm:") else FROZEN_RUN), False
        return "none", False


def paper(dataset: str, kind: str, image_size: int) -> Recipe:
    imagenet = dataset == "imagenet"
    return Recipe("paper", "resnet50", PAPER_WEIGHTS, True, dataset in CROPPED, 224,
                  dense_training=not imagenet,
                  schedule=dict(IMAGENET_SCHEDULE if imagenet else PAPER_SCHEDULE))


def scratch(dataset: str, kind: str, image_size: int) -> Recipe:
    return Recipe("scratch", "small-cnn", "none", False, dataset in CROPPED, image_size, True,
                  dict(SCRATCH_SCHEDULE), augment="affine", flip=False)


def dino(dataset: str, kind: str, image_size: int) -> Recipe:
    if kind == "digits":  # the small CNN of the scratch run, frozen (CPU-sized adapter)
        base = scratch(dataset, kind, image_size)
        return Recipe("dino", base.arch, FROZEN_RUN, False, False, image_size, True,
                      augment="none", flip=False,
                      extra=dict(DINO_OFFLINE_OPTIONS),
                      per_model_type={k: {**v, "ft_epochs": DINO_OFFLINE_OPTIONS["ft_epochs"]}
                                      for k, v in DINO_FINETUNE.items()})
    # The reference's images: the whole image (no crop to the box), 224 px. A frozen ResNet
    # keeps torchvision's strides: 7 x 7 maps, a token cache 16 times smaller than at 28 x 28.
    # No augmentation: a frozen backbone's outputs are computed once per image (test transform).
    return Recipe("dino", DINO_ARCH, PAPER_WEIGHTS, False, False, 224, True, augment="none",
                  flip=False, extra=dict(DINO_OPTIONS), per_model_type=dict(DINO_FINETUNE))


RECIPES = {"scratch": scratch, "paper": paper, "dino": dino}


def recipe_names() -> list[str]:
    return [*RECIPES, *ALIASES]


def get_recipe(name: str | None, dataset: str, cfg=None) -> Recipe:
    """Recipe ``name`` (None: ``dino`` when ``cfg`` freezes its backbone or names a timm ViT,
    else the one :func:`choose_recipe` picks without looking at the disk) for ``dataset``;
    every recipe applies to every dataset."""
    from qpm.data import get_dataset

    spec = get_dataset(dataset)
    if name is None:
        name = choose_recipe(dataset, None if cfg is None else cfg.arch, None, None,
                             None if cfg is None else cfg.frozen_backbone).name
    name = ALIASES.get(name, name)
    if name not in RECIPES:
        raise QPMError(f"Unknown recipe {name!r}.", f"Choose one of: {', '.join(RECIPES)}.")
    return RECIPES[name](dataset, spec.kind, spec.image_size)


@dataclass(frozen=True)
class Choice:
    name: str
    reason: str


def choose_recipe(dataset: str, arch: str | None, weights: str | None,
                  weights_on_disk: Callable[[str, str], bool] | None = None,
                  frozen: bool | None = None) -> Choice:
    """The recipe for a starting point: ``dino`` for a frozen backbone (``frozen``; None:
    when ``arch`` is a timm ViT, whose tokens only an adapter reads as features), ``scratch``
    for a backbone trained from scratch (``--weights none``, an architecture without
    pretrained weights such as small-cnn or
    timm, or -- for a dataset that is not one of the paper's -- pretrained weights that are
    not on disk), ``paper`` for a pretrained one. The paper's datasets keep ``paper`` when
    no flag says otherwise (their weights are downloaded where the network allows).
    ``weights_on_disk(arch, weights)`` tells whether named weights need no download (None:
    assume they do)."""
    from qpm.data import get_dataset

    default = get_dataset(dataset).recipe
    if frozen or (frozen is None and arch is not None and arch.startswith("timm:")
                  and timm_vit(arch[5:])):
        return Choice("dino", "a frozen backbone" if frozen else f"{arch} is a vision "
                      "transformer: a frozen backbone under an adapter")
    if arch is not None and not arch.startswith("resnet"):
        return Choice("scratch", f"{arch} starts from scratch")
    if weights in ("none", ""):
        return Choice("scratch", "--weights none starts from scratch")
    if weights is not None:
        return Choice("paper", f"fine-tuning the pretrained weights {weights}")
    if default != "auto":
        return Choice(ALIASES.get(default, default), f"the default for {dataset}")
    arch = arch or paper(dataset, "natural", 224).arch
    if weights_on_disk is not None and weights_on_disk(arch, PAPER_WEIGHTS):
        return Choice("paper", f"fine-tuning {arch} from its {PAPER_WEIGHTS} weights, which "
                      "are on disk")
    return Choice("scratch", f"no pretrained {arch} weights on disk; --recipe paper downloads "
                  f"and fine-tunes them")


@functools.cache  # asked several times per start (choice, resolve, recipe)
def timm_vit(name: str) -> bool:
    """Whether timm's model ``name`` has patch tokens (built without memory on the meta
    device; an unknown name is left to the backbone's own check)."""
    try:
        import timm
        import torch

        with torch.device("meta"):
            net = timm.create_model(name, pretrained=False, num_classes=0)
        return hasattr(net, "patch_embed") and hasattr(net, "num_prefix_tokens")
    except Exception:  # noqa: BLE001 - unknown names, missing timm: decided elsewhere
        return False


def describe(cfg) -> str:
    """What a resolved config trains, in one line (printed by ``qpm train``)."""
    from qpm.data.transforms import describe as describe_transforms

    strides = ""
    if cfg.arch.startswith("resnet"):
        strides = (", stride 1 in layer3 and layer4" if cfg.reduced_strides
                   else ", torchvision strides")
    weights = ("from scratch" if cfg.weights in (None, "", "none")
               else f"from weights {cfg.weights}")
    if cfg.frozen_backbone and cfg.weights in (None, "", "none"):
        weights = "with random weights (--weights none)"
    dense = (f"dense {cfg.epochs} epochs lr {cfg.lr:g}" if cfg.dense_training
             else "no dense training (the pretrained model with its classifier)")
    frozen = "frozen " if cfg.frozen_backbone else ""
    transforms = ("backbone outputs computed once per image (test transform, cached)"
                  if cfg.frozen_backbone else describe_transforms(cfg.transforms, cfg.image_size))
    return (f"recipe {cfg.recipe} for {cfg.dataset}: {frozen}{cfg.arch} {weights}{strides}; "
            f"{'images cropped to their boxes, ' if cfg.crop_gt else ''}{cfg.image_size} px; "
            f"{transforms}; batch {cfg.batch_size}, "
            f"{dense}, fine-tuning {cfg.ft_epochs} epochs lr {cfg.ft_lr:g}{_extras(cfg)}")


def _extras(cfg) -> str:
    """What a run does beyond QPM's training (the dino recipe's settings), or nothing."""
    parts = []
    if cfg.adapter_layers:
        widths = [cfg.adapter_hidden] * (cfg.adapter_layers - 1) + [cfg.adapter_features]
        chain = " -> ".join(map(str, widths))
        parts.append(f"adapter {cfg.adapter_layers} layers per patch ({chain}, BatchNorm + "
                     "ReLU each; features: their average over the patches)")
    if cfg.optimizer != "sgd":
        parts.append(f"optimizer {cfg.optimizer}")
    if cfg.beta != 0.196 or cfg.ft_beta is not None:
        ft = cfg.beta if cfg.ft_beta is None else cfg.ft_beta
        parts.append(f"diversity loss {cfg.beta:g} (fine-tuning {ft:g})")
    if cfg.l1_maps or cfg.l1_features:
        parts.append(f"fine-tuning L1 {cfg.l1_maps:g} on maps, {cfg.l1_features:g} on features")
    if cfg.locality_bias == "off":
        parts.append("no locality bias")
    if cfg.mip_gap != 1e-4:
        parts.append(f"MIP gap {cfg.mip_gap:g}")
    if cfg.time_limit is not None and cfg.recipe == "dino":
        parts.append(f"solve time limit {cfg.time_limit:g} s")
    return "; " + "; ".join(parts) if parts else ""
