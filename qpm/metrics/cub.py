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
