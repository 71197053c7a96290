"""The dataset registry and the bundle the stages use.

A dataset is registered once, where its reader is defined (:mod:`qpm.data.datasets`), with
``@register_dataset(name, kind, mean, std, ...)``; :func:`build_data` reads it and attaches
the reference's train and test transforms (:mod:`qpm.data.transforms`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import Dataset

from qpm.data.images import ImageFiles, RawData, Split, TensorImages
from qpm.data.transforms import make_transform, parse, transform_name
from qpm.errors import QPMError


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    reader: Callable[[Path | None], RawData]
    kind: str  # "natural" (PIL images, the reference's transforms) or "digits" (tensors)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    image_size: int  # the images' size under the scratch recipe
    needs_root: bool = True
    # The default recipe (qpm.run_folder.recipes): paper (the paper's datasets), scratch, or
    # auto (paper when pretrained weights are on disk, else scratch: any image folder).
    recipe: str = "paper"
    description: str = ""


_DATASETS: dict[str, DatasetSpec] = {}


def register_dataset(name: str, kind: str, mean: tuple[float, ...], std: tuple[float, ...],
                     image_size: int = 224, *, needs_root: bool = True, recipe: str = "paper",
                     description: str = "") -> Callable:
    """Decorate a reader ``reader(root) -> RawData`` to make it dataset ``name``."""

    def register(reader: Callable[[Path | None], RawData]) -> Callable:
        _DATASETS[name] = DatasetSpec(name, reader, kind, tuple(mean), tuple(std), image_size,
                                      needs_root, recipe, description)
        return reader

    return register


def dataset_names() -> list[str]:
    return sorted(_DATASETS)


def get_dataset(name: str) -> DatasetSpec:
    try:
        return _DATASETS[name]
    except KeyError:
        raise QPMError(f"Unknown dataset {name!r}.",
                       f"Choose one of: {', '.join(dataset_names())}.") from None


def eval_transform(spec: DatasetSpec, size: int, crop_gt: bool = False) -> Callable:
    """The test-time transform of dataset ``spec`` at ``size`` px (cropped images or not)."""
    name = transform_name(spec.kind, spec.name, crop_gt)
    return make_transform(name, size, spec.mean, spec.std, train=False)


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
               crop_gt: bool = False, transforms: str | None = None) -> DataBundle:
    """Read dataset ``name`` and attach the train and evaluation transforms: ``transforms``
    (a name of :mod:`qpm.data.transforms`, as a run's config records it) or the dataset's
    own (the reference's, chosen by the dataset and ``crop_gt``). Its geometry must be the
    dataset's: only the training augmentation is a choice."""
    spec = get_dataset(name)
    root = None if data_root in (None, "") else Path(data_root).expanduser()
    if spec.needs_root and root is None:
        raise QPMError(f"Dataset {name} needs --data-root.",
                       "Pass --data-root DIR (or use the offline default --dataset mnist-5k).")
    raw = spec.reader(root)
    if crop_gt and (raw.train.boxes is None or raw.test.boxes is None):
        raise QPMError(f"--crop-gt needs bounding boxes, which dataset {name} does not provide.",
                       "Drop --crop-gt (it applies to cub2011 with bounding_boxes.txt).")
    size = int(spec.image_size if image_size is None else image_size)  # 0 is refused
    native = transform_name(spec.kind, spec.name, crop_gt)
    if transforms is not None and parse(transforms)[0] != native:
        raise QPMError(f"Transforms {transforms!r} do not fit dataset {name} "
                       f"({'cropped' if crop_gt else 'whole'} images: {native}).",
                       "Leave the transforms to the recipe (--augment and --flip choose the "
                       "augmentation).")
    tr = make_transform(transforms or native, size, spec.mean, spec.std, train=True)
    ev = eval_transform(spec, size, crop_gt)

    def wrap(split: Split, transform: Callable) -> Dataset:
        if split.images is not None:
            return TensorImages(split, transform)
        return ImageFiles(split, transform, crop=crop_gt)

    return DataBundle(name, wrap(raw.train, tr), wrap(raw.train, ev), wrap(raw.test, ev),
                      list(raw.class_names), raw.in_channels, size)
