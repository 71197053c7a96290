"""Every file name of a run folder, and where a model type's variant keeps its files.

A run folder (``runs/<dataset>/<arch>/<seed>/`` or ``--run-dir``) holds::

    config.json           the resolved TrainConfig of the latest qpm train there
    data.json             the data it was trained on: class names, counts, files and sizes
    stages/<stage>.json   one record per finished shared stage (see records.StageRecord)
    metrics.json          accuracies and metrics (dense; older folders: every model type)
    dense.pt features.npz similarities.npz     the shared artifacts
    <stage>.ckpt          the epoch checkpoint of a training stage in progress
    tokens/               a frozen backbone's outputs, computed once (manifest.json, train.f16,
                          test.f16; qpm.pipeline.token_cache)
    .lock                 held (an OS lock) by the one process that writes the folder
    variants/<name>/      one model type at one setting (qpm-n50-k5-qpm-gurobi-1a2b3c):
        config.json stages/ metrics.json assignment.json assignment.png qpm.pt explain/ ...
        calibration-qpm.json calibration-qpm.npz   qpm calibrate: the split, the thresholds
                                                   and the calibration images' outputs

A variant folder is laid out like the run folder, for the stages after the shared ones, so
several settings (n, k, preset, solver) live side by side on one dense model and one set of
features, as the reference names its files by n and k. Folders written before variants hold
one model per type at the top level; they are read (and re-trained) in place.
"""

from __future__ import annotations

CONFIG = "config.json"
DATA = "data.json"
METRICS = "metrics.json"
RECORDS = "stages"
LOCK = ".lock"
DENSE = "dense.pt"
FEATURES = "features.npz"
SIMILARITIES = "similarities.npz"
ASSIGNMENT = "assignment.json"
VARIANTS = "variants"
EXPLAIN = "explain"
SLDD_LAYER = "sldd_layer.npz"
TOKENS = "tokens"  # the token cache of a frozen backbone (a folder)
TOKENS_MANIFEST = "manifest.json"  # inside TOKENS: what the cache was computed from, progress


def model_file(model_type: str) -> str:
    """The model file a model type's last stage writes (dense.pt, qpm.pt, sldd.pt, ...)."""
    return f"{model_type}.pt"


def plot_file(model_type: str) -> str:
    """The picture of a sparse model's assignment matrix."""
    return "assignment.png" if model_type == "qpm" else f"{model_type}_assignment.png"


def checkpoint_file(stage: str) -> str:
    return f"{stage}.ckpt"


def calibration_files(model_type: str) -> tuple[str, str]:
    """qpm calibrate's summary (JSON) and the calibration images' outputs (.npz) for a model
    type; named by type because a folder written before variants holds several types."""
    return f"calibration-{model_type}.json", f"calibration-{model_type}.npz"


def token_file(split: str) -> str:
    """A split's array in the token cache folder (raw float16)."""
    return f"{split}.f16"
