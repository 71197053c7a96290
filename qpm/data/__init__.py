"""Datasets: readers of each folder layout (registered where they are defined), the images
they yield and the reference's transforms. ``build_data(name, root)`` is the way in."""

# The readers register themselves on import: this list is every dataset qpm knows.
from qpm.data import datasets as _datasets  # noqa: F401
from qpm.data.registry import (
    DataBundle,
    DatasetSpec,
    build_data,
    dataset_names,
    eval_transform,
    get_dataset,
    register_dataset,
)

__all__ = ["DataBundle", "DatasetSpec", "build_data", "dataset_names", "eval_transform",
           "get_dataset", "register_dataset"]
