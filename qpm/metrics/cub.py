"""CUB's attribute annotations for a run's metrics: the class attributes of Structural
Grounding and the training images' attributes of Alignment (other datasets: None)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from qpm.errors import QPMError

CUB_DATASETS = ("cub2011",)


def class_attributes_for(config) -> np.ndarray | None:
    """CUB's class attributes for Structural Grounding, or None (other datasets: n/a)."""
    from qpm.metrics.grounding import load_cub_class_attributes

    if config.dataset not in CUB_DATASETS or not config.data_root:
        return None
    try:
        return load_cub_class_attributes(config.data_root)
    except QPMError as exc:
        logging.getLogger("qpm.evaluate").warning(f"note: Structural Grounding skipped: {exc}")
        return None


def image_attributes_for(config):
    """CUB's per-image attribute labels of the training images for Alignment, or None."""
    from qpm.data.datasets import read_cub_metadata
    from qpm.metrics.alignment import read_cub_image_attributes

    if config.dataset not in CUB_DATASETS or not config.data_root:
        return None
    try:
        base, meta = read_cub_metadata(Path(config.data_root), config.dataset)
        # the training features are the training images in image-id order
        train_ids = [i for i in meta["ids"] if meta["split"][i][0] == "1"]
        return read_cub_image_attributes(base, train_ids)
    except QPMError as exc:
        logging.getLogger("qpm.evaluate").warning(f"note: Alignment skipped: {exc}")
        return None


def segmentations_for(config, test):
    """The CUB segmentation masks of the test images, as the model sees them (cropped to the
    box as the images are, then the test transform's resizing and cropping): a dataset
    yielding (mask (1, H, W) in [0, 1], label) in the test set's order, for Plausibility.
    None for other datasets, or when ``segmentations/`` is not in the CUB folder (a note
    says where to get it)."""
    from qpm.data import eval_transform, get_dataset
    from qpm.data.datasets import read_cub_metadata
    from qpm.data.images import ImageFiles, Split

    split = getattr(test, "split", None)
    if config.dataset not in CUB_DATASETS or not config.data_root or split is None:
        return None
    try:
        base, _ = read_cub_metadata(Path(config.data_root), config.dataset)
    except QPMError:
        return None
    folder = base / "segmentations"
    paths = [folder / Path(p).relative_to(base / "images").with_suffix(".png")
             for p in split.paths]
    missing = next((p for p in paths if not p.is_file()), None)
    if missing is not None:
        logging.getLogger("qpm.evaluate").warning(
            f"note: Plausibility skipped: {missing} is missing (CUB's segmentation masks are a "
            f"separate download, 'Segmentations' on the CUB-200-2011 page; unpack it to "
            f"{folder})")
        return None
    return ImageFiles(Split(split.labels, paths=paths, boxes=split.boxes),
                      mask_transform(eval_transform(get_dataset(config.dataset),
                                                    config.image_size, bool(config.crop_gt))),
                      crop=bool(config.crop_gt))


def mask_transform(transform):
    """The geometric steps of an evaluation transform (resizing and cropping), then the mask
    as one channel in [0, 1]: a mask lands on the pixels its image lands on."""
    from torchvision import transforms as T

    steps = [t for t in getattr(transform, "transforms", []) if isinstance(t, (T.Resize,
                                                                              T.CenterCrop))]
    return T.Compose([*steps, T.Grayscale(), T.ToTensor()])
