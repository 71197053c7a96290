"""A run's conformal calibration applied to images: prediction sets for ``qpm predict
--coverage`` and ``model.predict(..., coverage=)``, ``model.explain(..., coverage=)`` and the
demo.

The run folder keeps the calibration images' outputs (``qpm calibrate``), so a threshold for
any coverage and method is re-derived here in milliseconds, without the dataset.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from qpm.conformal import Outputs, Threshold, get_method, methods_for
from qpm.errors import QPMError
from qpm.inference.results import ConformalSets


def default_method(weight: np.ndarray) -> str:
    """The hierarchical method where the layer allows it (qpm, chiqpm), else THR."""
    return "hierarchical" if "hierarchical" in methods_for(weight) else "thr"


@dataclass
class Calibration:
    """A model's stored calibration: the calibration images' outputs and how they were drawn."""

    summary: dict
    outputs: Outputs
    labels: np.ndarray
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def coverage(self) -> float:
        """The coverage qpm calibrate was asked for (the default of predict and the demo)."""
        return float(self.summary["coverage"])

    @property
    def split_text(self) -> str:
        return str(self.summary.get("split_text", "calibration split unknown"))

    @property
    def split(self) -> str:
        """The split in a few words, for every row of a CSV."""
        d = self.summary.get("split") or {}
        if d.get("rule") == "stratified":
            return f"stratified {100 * float(d.get('fraction') or 0):g}%, seed {d.get('seed')}"
        return str(d.get("rule", "unknown"))

    @property
    def seed(self) -> int:
        return int(self.summary.get("seed", 0))

    def threshold(self, method: str, coverage: float) -> Threshold:
        key = (method, float(coverage))
        if key not in self._cache:
            m = _method(method, self.outputs.weight)
            rng = np.random.default_rng(self.seed)
            self._cache[key] = m.calibrate(self.outputs, self.labels, coverage, rng)
        return self._cache[key]

    def sets(self, outputs: Outputs, method: str, coverage: float,
             class_names: list[str]) -> ConformalSets:
        """The prediction set of every image in ``outputs`` (APS draws from a generator
        seeded with the run's seed, so the same images give the same sets)."""
        th = self.threshold(method, coverage)
        chosen = _method(method, outputs.weight).sets(outputs, th,
                                                      np.random.default_rng(self.seed + 1))
        classes = [np.flatnonzero(row).tolist() for row in chosen]
        return ConformalSets(method=method, title=get_method(method).title,
                             coverage=float(coverage), threshold=th,
                             calibration=self.split_text, classes=classes,
                             names=[[class_names[c] for c in row] for row in classes],
                             split=self.split)


def _method(name: str, weight: np.ndarray):
    try:
        m = get_method(name)
    except ValueError as exc:
        raise QPMError(str(exc), "Pass --method thr, aps or hierarchical.") from None
    why = m.unusable(weight)
    if why:
        raise QPMError(f"The {name} method does not work with this model: {why}.",
                       f"Use one of: {', '.join(methods_for(weight))}.")
    return m


def load_calibration(folder, model_type: str, weight: np.ndarray, fix: str) -> Calibration:
    """The calibration ``qpm calibrate`` stored next to a model file."""
    from qpm import run_folder as rf

    summary, arrays = rf.read_calibration(folder, model_type, fix)
    w = np.asarray(weight, dtype=np.float64)
    logits, values = arrays["logits"], arrays["values"]
    if logits.shape[1] != w.shape[0] or values.shape[1] != w.shape[1]:
        raise QPMError("The stored calibration does not fit the model's final layer.", fix)
    out = Outputs(logits.astype(np.float64), values.astype(np.float64), w)
    return Calibration(summary, out, arrays["labels"].astype(np.int64))


@torch.no_grad()
def dataset_outputs(model, dataset: Dataset, batch_size: int = 128
                    ) -> tuple[Outputs, np.ndarray]:
    """A loaded model's logits and final-layer inputs on every image of ``dataset``, in order,
    and the labels."""
    logits, values, labels = [], [], []
    for x, y in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        lg, val, _ = model._run(x)
        logits.append(lg.cpu().numpy())
        values.append(val.cpu().numpy())
        labels.append(np.asarray(y))
    w, _ = model.layer()
    return (Outputs(np.concatenate(logits).astype(np.float64),
                    np.concatenate(values).astype(np.float64), w),
            np.concatenate(labels).astype(np.int64))
