"""Recipes: everything ``qpm train`` uses for what the command line leaves open.

``paper`` reproduces the QPM reference implementation's settings per dataset (``main.py``,
``configs/``, ``get_data.py``): ResNet-50 from the torchvision ImageNet weights IMAGENET1K_V1,
stride 1 in layer3 and layer4 (28 x 28 maps at 224 px), CUB and TravelingBirds cropped to
their boxes, 224 px, the reference's transforms and schedules; ImageNet skips dense training
and fine-tunes the pretrained model. ``offline`` is the CPU-sized recipe of the digit sets:
a small CNN from scratch with a short schedule. A value given on the command line (or in the
config) always wins over the recipe's.
"""

from __future__ import annotations

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
# The offline digit sets train a small CNN from scratch: short, with a larger learning rate.
OFFLINE_SCHEDULE: dict[str, float | int] = {
    "epochs": 12, "lr": 0.05, "classifier_lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4,
    "step_size": 5, "gamma": 0.4, "batch_size": 64,
    "ft_epochs": 6, "ft_lr": 0.005, "ft_momentum": 0.9, "ft_weight_decay": 5e-4,
    "ft_step_size": 3, "ft_gamma": 0.4,
}
PAPER_WEIGHTS = "IMAGENET1K_V1"  # the reference loads torchvision's original ResNet weights
CROPPED = ("cub2011", "travelingbirds")  # the reference's --cropGT default applies to these


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

    def backbone(self, arch: str) -> tuple[str, bool]:
        """(weights, reduced strides) for ``arch``: the recipe's for the torchvision ResNets,
        none and no stride change for the others (small-cnn, timm)."""
        if arch.startswith("resnet"):
            return self.weights, self.reduced_strides
        return "none", False


def paper(dataset: str, kind: str, image_size: int) -> Recipe:
    if kind != "natural":
        raise QPMError(f"Recipe paper is for the natural-image datasets, not {dataset}.",
                       "Use --recipe offline (the default) for the digit sets.")
    imagenet = dataset == "imagenet"
    return Recipe("paper", "resnet50", PAPER_WEIGHTS, True, dataset in CROPPED, 224,
                  dense_training=not imagenet,
                  schedule=dict(IMAGENET_SCHEDULE if imagenet else PAPER_SCHEDULE))


def offline(dataset: str, kind: str, image_size: int) -> Recipe:
    if kind != "digits":
        raise QPMError(f"Recipe offline is for the digit sets, not {dataset}.",
                       "Use --recipe paper (the default) for natural images.")
    return Recipe("offline", "small-cnn", "none", False, False, image_size, True,
                  dict(OFFLINE_SCHEDULE))


RECIPES = {"paper": paper, "offline": offline}


def get_recipe(name: str | None, dataset: str) -> Recipe:
    """Recipe ``name`` (None: the dataset's default) for ``dataset``."""
    from qpm.data import get_dataset

    spec = get_dataset(dataset)
    name = spec.recipe if name is None else name
    if name not in RECIPES:
        raise QPMError(f"Unknown recipe {name!r}.", f"Choose one of: {', '.join(RECIPES)}.")
    return RECIPES[name](dataset, spec.kind, spec.image_size)


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
