"""Recipes: everything ``qpm train`` uses for what the command line leaves open.

Two recipes, for the two starting points a backbone can have:

- ``paper`` fine-tunes a pretrained backbone with the QPM reference implementation's settings
  (``main.py``, ``configs/``, ``get_data.py``): ResNet-50 from the torchvision ImageNet weights
  IMAGENET1K_V1, stride 1 in layer3 and layer4 (28 x 28 maps at 224 px), CUB and
  TravelingBirds cropped to their boxes, 224 px, the reference's transforms (with horizontal
  flips) and schedules; ImageNet skips dense training and fine-tunes the pretrained model.
- ``scratch`` trains a backbone from scratch: a small CNN, a short schedule with a larger
  learning rate, and an augmentation that never changes what an image shows (a small random
  rotation, zoom and shift; no flip, which would turn a "b" into a "d"). ``offline``, its
  name before, is accepted for it.

Which one applies when ``--recipe`` is not given follows from the starting point
(:func:`choose_recipe`), not from the dataset's name. A value given on the command line (or in
the config) always wins over the recipe's.
"""

from __future__ import annotations

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
PAPER_WEIGHTS = "IMAGENET1K_V1"  # the reference loads torchvision's original ResNet weights
CROPPED = ("cub2011", "travelingbirds")  # the reference's --cropGT default applies to these
ALIASES = {"offline": "scratch"}  # earlier names, still accepted (and recorded in old folders)
# What a recipe decides (besides the schedule): a re-run that changes the recipe re-decides it.
RECIPE_FIELDS = ("arch", "weights", "reduced_strides", "crop_gt", "image_size",
                 "dense_training", "augment", "flip", *PAPER_SCHEDULE)


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

    def backbone(self, arch: str) -> tuple[str, bool]:
        """(weights, reduced strides) for ``arch``: the recipe's for the torchvision ResNets,
        none and no stride change for the others (small-cnn, timm)."""
        if arch.startswith("resnet"):
            return self.weights, self.reduced_strides
        return "none", False


def paper(dataset: str, kind: str, image_size: int) -> Recipe:
    imagenet = dataset == "imagenet"
    return Recipe("paper", "resnet50", PAPER_WEIGHTS, True, dataset in CROPPED, 224,
                  dense_training=not imagenet,
                  schedule=dict(IMAGENET_SCHEDULE if imagenet else PAPER_SCHEDULE))


def scratch(dataset: str, kind: str, image_size: int) -> Recipe:
    return Recipe("scratch", "small-cnn", "none", False, dataset in CROPPED, image_size, True,
                  dict(SCRATCH_SCHEDULE), augment="affine", flip=False)


RECIPES = {"scratch": scratch, "paper": paper}


def recipe_names() -> list[str]:
    return [*RECIPES, *ALIASES]


def get_recipe(name: str | None, dataset: str) -> Recipe:
    """Recipe ``name`` (None: the one :func:`choose_recipe` picks without looking at the
    disk) for ``dataset``; every recipe applies to every dataset."""
    from qpm.data import get_dataset

    spec = get_dataset(dataset)
    if name is None:
        name = choose_recipe(dataset, None, None).name
    name = ALIASES.get(name, name)
    if name not in RECIPES:
        raise QPMError(f"Unknown recipe {name!r}.", f"Choose one of: {', '.join(RECIPES)}.")
    return RECIPES[name](dataset, spec.kind, spec.image_size)


@dataclass(frozen=True)
class Choice:
    name: str
    reason: str


def choose_recipe(dataset: str, arch: str | None, weights: str | None,
                  weights_on_disk: Callable[[str, str], bool] | None = None) -> Choice:
    """The recipe for a starting point: ``scratch`` for a backbone trained from scratch
    (``--weights none``, an architecture without pretrained weights such as small-cnn or
    timm, or -- for a dataset that is not one of the paper's -- pretrained weights that are
    not on disk), ``paper`` for a pretrained one. The paper's datasets keep ``paper`` when
    no flag says otherwise (their weights are downloaded where the network allows).
    ``weights_on_disk(arch, weights)`` tells whether named weights need no download (None:
    assume they do)."""
    from qpm.data import get_dataset

    default = get_dataset(dataset).recipe
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


def describe(cfg) -> str:
    """What a resolved config trains, in one line (printed by ``qpm train``)."""
    from qpm.data.transforms import describe as describe_transforms

    strides = ""
    if cfg.arch.startswith("resnet"):
        strides = (", stride 1 in layer3 and layer4" if cfg.reduced_strides
                   else ", torchvision strides")
    weights = ("from scratch" if cfg.weights in (None, "", "none")
               else f"from weights {cfg.weights}")
    dense = (f"dense {cfg.epochs} epochs lr {cfg.lr:g}" if cfg.dense_training
             else "no dense training (the pretrained model with its classifier)")
    return (f"recipe {cfg.recipe} for {cfg.dataset}: {cfg.arch} {weights}{strides}; "
            f"{'images cropped to their boxes, ' if cfg.crop_gt else ''}{cfg.image_size} px; "
            f"{describe_transforms(cfg.transforms, cfg.image_size)}; batch {cfg.batch_size}, "
            f"{dense}, fine-tuning {cfg.ft_epochs} epochs lr {cfg.ft_lr:g}")
