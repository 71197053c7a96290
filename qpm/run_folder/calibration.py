"""A model's conformal calibration in its folder: ``calibration-<type>.json`` (the split, the
thresholds at the coverage asked for, the model file's and the arrays' sha256) and
``calibration-<type>.npz`` (the calibration images' logits, layer inputs and labels, so any
coverage can be re-derived without the dataset).

The .npz is written first and the JSON names its hash, so a pair from two different writes, or
a calibration of an earlier model file, is found out and refused with the way out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from qpm.errors import QPMError
from qpm.io import ArtifactError, read_json, save_npz, write_json
from qpm.run_folder.names import calibration_files, model_file
from qpm.run_folder.reading import read_arrays
from qpm.run_folder.records import file_hash

ARRAYS = ("logits", "values", "labels", "indices")
FORMAT_VERSION = 1


def calibration_paths(folder: str | Path, model_type: str) -> tuple[Path, Path]:
    summary, data = calibration_files(model_type)
    return Path(folder) / summary, Path(folder) / data


def write_calibration(folder: str | Path, model_type: str, summary: dict[str, Any],
                      arrays: dict[str, np.ndarray]) -> Path:
    """Write both files (the arrays first); returns the JSON's path."""
    missing = [k for k in ARRAYS if k not in arrays]
    if missing:
        raise ValueError(f"calibration arrays missing: {missing}")
    js, data = calibration_paths(folder, model_type)
    save_npz(data, **{k: np.asarray(arrays[k]) for k in ARRAYS})
    full = {**summary, "format_version": FORMAT_VERSION, "model_type": model_type,
            "model_sha256": file_hash(Path(folder) / model_file(model_type)),
            "data_file": data.name, "data_sha256": file_hash(data)}
    return write_json(js, full)


def read_calibration(folder: str | Path, model_type: str, fix: str
                     ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(summary, arrays) of the model's calibration; QPMError (with ``fix``) when there is none,
    it is unreadable, or it belongs to another model file."""
    js, data = calibration_paths(folder, model_type)
    if not js.is_file():
        raise QPMError(f"{js.parent} has no calibration for its {model_type} model "
                       f"({js.name}).", fix)
    try:
        summary = read_json(js, fix, "Calibration")
    except ArtifactError as exc:
        raise QPMError(exc.problem, fix) from None
    if not isinstance(summary, dict) or summary.get("format_version") != FORMAT_VERSION:
        raise QPMError(f"{js} is not a calibration qpm can read.", fix)
    model = Path(folder) / model_file(model_type)
    if not model.is_file() or summary.get("model_sha256") != file_hash(model):
        raise QPMError(f"{js} was made for an earlier {model.name}, which has changed since.",
                       fix)
    if not data.is_file() or summary.get("data_sha256") != file_hash(data):
        raise QPMError(f"{data} is missing or does not belong to {js.name}.", fix)
    try:
        arrays = read_arrays(data, ARRAYS)
    except QPMError as exc:
        raise QPMError(exc.problem, fix) from None
    n = len(arrays["labels"])
    if any(len(arrays[k]) != n for k in ARRAYS) or arrays["logits"].ndim != 2 \
            or arrays["values"].ndim != 2:
        raise QPMError(f"{data} holds arrays of inconsistent shapes.", fix)
    return summary, arrays
