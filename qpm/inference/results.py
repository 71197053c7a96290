"""What :class:`qpm.inference.QPMModel` returns: plain dataclasses over numpy arrays."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from qpm.conformal import Hierarchy, Threshold
from qpm.explain.structure import FeatureCounts


@dataclass(frozen=True)
class FeatureEvidence:
    """One feature's part in one class's logit for one image.

    ``activation`` is the value the final layer multiplies (the pooled feature after the
    layer's normalisation), so ``contribution = weight * activation`` and the class's logit
    is the sum of its features' contributions (plus the layer's bias, if any).
    """

    index: int  # backbone feature index
    name: str
    activation: float
    weight: float

    @property
    def contribution(self) -> float:
        return self.weight * self.activation

    def to_dict(self) -> dict:
        return {**asdict(self), "contribution": self.contribution}


@dataclass(frozen=True)
class MarginTerm:
    """A feature that separates the predicted class from the runner-up: its share of the
    logit margin, ``(weight_predicted - weight_runner_up) * activation``."""

    index: int
    name: str
    activation: float
    weight_predicted: float
    weight_runner_up: float

    @property
    def margin(self) -> float:
        return (self.weight_predicted - self.weight_runner_up) * self.activation

    def to_dict(self) -> dict:
        return {**asdict(self), "margin": self.margin}


@dataclass
class ConformalSets:
    """Conformal prediction sets: for each image the classes that, at the stated coverage,
    the calibrated ``method`` cannot rule out (see :mod:`qpm.conformal`)."""

    method: str
    title: str
    coverage: float  # the target: P(true class in the set) >= coverage (split conformal)
    threshold: Threshold  # q_hat, and for the hierarchical method its level
    calibration: str  # which test images calibrated (a sentence)
    classes: list[list[int]]  # per image, ascending
    names: list[list[str]]
    split: str = ""  # the same in a few words: "stratified 50%, seed 0" or "reference"

    def describe(self) -> str:
        lv = self.threshold.level
        level = "" if lv is None else (
            ", any class whose score passes (level 0)" if lv == 0 else
            f", classes sharing the first {lv} path feature(s) with the prediction (level {lv})")
        return (f"{self.title} prediction sets at {self.coverage:g} coverage{level}; "
                f"{self.calibration}")

    def to_dict(self) -> dict:
        return {"method": self.method, "coverage": self.coverage,
                "threshold": self.threshold.to_dict(), "calibration": self.calibration,
                "split": self.split,
                "classes": self.classes, "names": self.names}


@dataclass
class Predictions:
    """One row per input image."""

    sources: list[str]  # the file path, or "<image i>" for in-memory images
    classes: np.ndarray  # (N,) predicted class indices
    names: list[str]  # (N,) predicted class names
    probabilities: np.ndarray  # (N, C) softmax of the logits
    logits: np.ndarray  # (N, C)
    features: list[list[FeatureEvidence]]  # the predicted class's features, largest part first
    # per image: how it differs from the training images (size, colour, brightness), if at all
    warnings: list[list[str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (file, why): not predicted
    sets: ConformalSets | None = None  # with predict(..., coverage=)

    def __len__(self) -> int:
        return len(self.sources)

    @property
    def confidence(self) -> np.ndarray:
        """(N,) probability of the predicted class."""
        return self.probabilities[np.arange(len(self)), self.classes]


@dataclass
class LocalExplanation:
    """Why one image got its class: the predicted class's features, and what separates it
    from the runner-up class."""

    source: str
    image: np.ndarray  # (H, W) or (H, W, 3) in [0, 1]: the model's input, un-normalised
    predicted: int
    predicted_name: str
    probability: float
    features: list[FeatureEvidence]
    runner_up: int
    runner_up_name: str
    runner_up_probability: float
    runner_up_features: list[FeatureEvidence]
    separating: list[MarginTerm]  # largest margin first
    maps: dict[int, np.ndarray] = field(repr=False)  # feature index -> raw (h, w) map grid
    logit: float = 0.0  # of the predicted class
    runner_up_logit: float = 0.0
    hierarchy: Hierarchy | None = None  # CHiQPM's tree (binary layers with k per class)
    class_names: list[str] = field(default_factory=list, repr=False)  # every class's name
    sets: ConformalSets | None = None  # this image's prediction set (explain(..., coverage=))

    @property
    def prediction_set(self) -> list[int] | None:
        return None if self.sets is None else self.sets.classes[0]

    def heatmap(self, feature: int) -> np.ndarray:
        """Feature ``feature``'s raw map upsampled (bilinear) to the image: (H, W), the
        image's pixel grid, whatever the backbone's grid (a ViT's patches, a CNN's cells)."""
        from qpm.explain.heatmaps import upsample

        return upsample(self.maps[feature], *self.image.shape[:2])

    def heatmaps(self) -> dict[int, np.ndarray]:
        """:meth:`heatmap` of every feature in :attr:`maps`."""
        return {f: self.heatmap(f) for f in self.maps}

    @property
    def shared(self) -> list[int]:
        mine = {f.index for f in self.features}
        return [f.index for f in self.runner_up_features if f.index in mine]

    def to_dict(self) -> dict:
        """JSON-ready (without the image and the maps)."""
        return {
            "source": self.source,
            "predicted": {"index": self.predicted, "name": self.predicted_name,
                          "probability": self.probability, "logit": self.logit,
                          "features": [f.to_dict() for f in self.features]},
            "runner_up": {"index": self.runner_up, "name": self.runner_up_name,
                          "probability": self.runner_up_probability,
                          "logit": self.runner_up_logit,
                          "features": [f.to_dict() for f in self.runner_up_features]},
            "shared": self.shared,
            "separating": [t.to_dict() for t in self.separating],
            "hierarchy": None if self.hierarchy is None else self.hierarchy.to_dict(),
            "prediction_set": None if self.sets is None else self.sets.to_dict(),
        }

    def save(self, path: str | Path, dpi: int = 110) -> Path:
        """Write the explanation as a PNG figure (see :func:`qpm.explain.local.plot_local`)."""
        from qpm.explain.local import plot_local

        return plot_local(self, path, dpi=dpi)


@dataclass
class GlobalExplanation:
    """The model's final layer as data: which class uses which features."""

    class_names: list[str]
    selected: list[int]  # backbone features the layer reads (n)
    classes: dict[int, list[int]]  # class -> its features (backbone indices), sorted
    features: dict[int, list[int]]  # selected feature -> the classes using it (may be empty)
    pairs: list[tuple[int, int, list[int]]]  # (a, b, shared features), most shared first
    counts: FeatureCounts

    @property
    def used(self) -> list[int]:
        return [f for f, cs in self.features.items() if cs]

    def pairs_sharing(self, n: int) -> list[tuple[int, int]]:
        """Class pairs sharing exactly ``n`` features."""
        return [(a, b) for a, b, s in self.pairs if len(s) == n]

    def to_dict(self) -> dict:
        return {
            "class_names": list(self.class_names),
            "selected": list(self.selected),
            "classes": {str(c): f for c, f in self.classes.items()},
            "features": {str(f): c for f, c in self.features.items()},
            "pairs": [{"classes": [a, b], "shared": s} for a, b, s in self.pairs],
            "counts": self.counts.to_dict(),
        }
