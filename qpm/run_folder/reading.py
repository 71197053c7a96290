"""Reading a run folder: its config and its finished models (dense, every variant, and the
top-level models of a folder written before variants), and its arrays."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qpm.errors import QPMError
from qpm.io import npz_headers, read_json, read_npz
from qpm.run_folder.config import TrainConfig
from qpm.run_folder.names import CONFIG, DENSE, FEATURES, VARIANTS, model_file
from qpm.run_folder.ownership import check_files

FIX_RUN = "Pass the folder qpm train wrote (e.g. runs/mnist-5k/small-cnn/0)."


@dataclass(frozen=True)
class Model:
    """A finished model: its type, its variant (None: dense, or a top-level model of a folder
    written before variants) and the folder holding its file, record, metrics and pictures."""

    model_type: str
    variant: str | None
    folder: Path

    @property
    def file(self) -> Path:
        return self.folder / model_file(self.model_type)

    @property
    def label(self) -> str:
        return self.variant or self.model_type


@dataclass
class RunFolder:
    path: Path
    config: TrainConfig  # the run's (the latest qpm train's) config
    models: list[Model]

    def types(self) -> list[str]:
        return list(dict.fromkeys(m.model_type for m in self.models))

    def find(self, model_type: str, variant: str | None = None) -> Model:
        """The ``model_type`` model of ``variant`` (its name or a unique start of it); without
        one, the most recently trained variant."""
        found = [m for m in self.models if m.model_type == model_type]
        if not found:
            raise QPMError(f"{self.path} holds no finished {model_type} model.",
                           f"Choose from: {', '.join(self.types())}, or train it: qpm train "
                           f"--model-type {model_type} --run-dir {self.path}.")
        if variant is None:
            return max(found, key=lambda m: m.file.stat().st_mtime_ns)
        exact = [m for m in found if m.label == variant]
        matches = exact or [m for m in found if m.label.startswith(variant)]
        if len(matches) != 1:
            what = "no" if not matches else "more than one"
            raise QPMError(f"{self.path} has {what} {model_type} variant "
                           f"{variant!r}.",
                           f"Choose one of: {', '.join(m.label for m in found)}.")
        return matches[0]

    def config_of(self, model: Model) -> TrainConfig:
        """The config that made ``model`` (a variant's own config.json, else the run's)."""
        if model.folder != self.path and (model.folder / CONFIG).is_file():
            return read_config(model.folder)
        return self.config


def read_config(folder: str | Path, data_root: str | None = None) -> TrainConfig:
    """The TrainConfig of a run (or variant) folder's config.json; QPMError if it is none."""
    path = Path(folder) / CONFIG
    data = read_json(path, "Restore it, or start a fresh run folder with --run-dir.", "Config")
    if data_root is not None and isinstance(data, dict):  # from_dict refuses a non-dict
        data["data_root"] = data_root
    return TrainConfig.from_dict(data)


def finished_models(run_dir: str | Path) -> list[Model]:
    """dense, the top-level models of an older folder, then every variant's model."""
    path = Path(run_dir)
    models = [Model(f.stem, None, path) for f in sorted(path.glob("*.pt"), key=_dense_first)]
    variants = path / VARIANTS
    for folder in sorted(variants.iterdir()) if variants.is_dir() else []:
        models += [Model(f.stem, folder.name, folder) for f in sorted(folder.glob("*.pt"))]
    return models


def _dense_first(file: Path) -> tuple[bool, str]:
    return file.name != DENSE, file.name


def open_run(run_dir: str | Path, data_root: str | None = None) -> RunFolder:
    """The run folder's config and finished models; QPMError when there is nothing to use."""
    path = Path(run_dir)
    if not path.is_dir():
        raise QPMError(f"Run folder {path} does not exist.", FIX_RUN)
    check_files(path)  # a folder (or a pipe) where a file should be: one line, not a traceback
    if not (path / CONFIG).is_file():
        raise QPMError(f"{path} has no config.json, so it is not a qpm run folder.",
                       FIX_RUN)
    config = read_config(path, data_root)
    models = finished_models(path)
    if not models:
        raise QPMError(f"{path} holds no finished model (dense.pt, or a variant's "
                       "qpm.pt, sldd.pt or qsenn.pt).",
                       "Finish a run first: qpm train (or re-run it to resume).")
    return RunFolder(path, config, models)


def read_arrays(path: str | Path, required: tuple[str, ...] = (),
                optional: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """The ``required`` and ``optional`` arrays of a run-folder .npz (every array when both
    are empty), read through :func:`qpm.io.read_npz`'s header and memory checks."""
    path = Path(path)
    fix = f"Delete {path} and re-run; it will be recomputed."
    keys = tuple(required) + tuple(optional)
    if not keys:
        keys = tuple(npz_headers(path, "Run-folder", fix))
    return read_npz(path, keys, what="Run-folder", required=tuple(required), fix=fix)


def class_names(run_dir: str | Path) -> list[str]:
    """The class names features.npz records."""
    names = read_arrays(Path(run_dir) / FEATURES, ("class_names",))["class_names"]
    return [str(x) for x in names.tolist()]
