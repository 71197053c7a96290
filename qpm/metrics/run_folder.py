"""Finding the finished models of a run folder and what is needed to evaluate them."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qpm.errors import QPMError
from qpm.pipeline import run_folder as rf

# model type -> the file its last stage writes
MODEL_FILES = {name: rf.model_file(name) for name in ("dense", "qpm", "qsenn", "sldd")}
CUB_DATASETS = ("cub2011",)


@dataclass
class RunFolder:
    path: Path
    config: object  # qpm.pipeline.config.TrainConfig
    models: dict[str, Path]  # finished model type -> model file

    def load(self, model_type: str, device="cpu"):
        """(model in eval mode, meta) of a finished model type."""
        import qpm.baselines  # noqa: F401  (registers the baselines' head type)
        from qpm.models.checkpoint import load_model

        return load_model(self.models[model_type], device)


def open_run(run_dir: str | Path, data_root: str | None = None) -> RunFolder:
    """The run folder's config and finished models; QPMError when there is nothing to use."""
    from qpm.io import read_json
    from qpm.pipeline.config import TrainConfig

    path = Path(run_dir)
    if not path.is_dir():
        raise QPMError(f"Run folder {path} does not exist.",
                       "Pass the folder qpm train wrote (e.g. runs/mnist-5k/small-cnn/0).")
    if not (path / rf.CONFIG).is_file():
        raise QPMError(f"{path} has no config.json, so it is not a qpm run folder.",
                       "Pass the folder qpm train wrote (e.g. runs/mnist-5k/small-cnn/0).")
    data = read_json(path / rf.CONFIG)
    if data_root is not None and isinstance(data, dict):  # from_dict refuses a non-dict
        data["data_root"] = data_root
    config = TrainConfig.from_dict(data)
    models = {name: path / f for name, f in MODEL_FILES.items() if (path / f).is_file()}
    if not models:
        raise QPMError(f"{path} holds no finished model ({', '.join(MODEL_FILES.values())}).",
                       "Finish a run first: qpm train (or re-run it to resume).")
    return RunFolder(path, config, models)


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
    from qpm.metrics.alignment import read_cub_image_attributes
    from qpm.pipeline.datasets import read_cub_metadata

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
