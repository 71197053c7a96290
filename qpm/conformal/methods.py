"""Conformal methods, one registry: each calibrates a threshold on a calibration split and
turns any image's outputs into a prediction set.

    thr           THR / LAC: the classes whose probability is high enough (any model)
    aps           APS, randomised as torchcp's default (any model)
    hierarchical  CHiQPM's hierarchical score: a subtree under the predicted path
                  (a binary layer with k features per class: qpm, chiqpm)

``@register_method`` records a method class under its ``name`` where it is defined. A method
works on :class:`Outputs` (numpy arrays) and returns a :class:`Threshold`, a small frozen
record that JSON holds.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from qpm.conformal.outputs import Outputs, path_scores
from qpm.conformal.paths import is_hierarchical, path_accuracy
from qpm.conformal.quantile import check_coverage, conformal_quantile, rank
from qpm.conformal.scores import thr_scores


@dataclass(frozen=True)
class Threshold:
    """A calibrated method: keep the classes whose score is at most ``q_hat``.

    ``n``: calibration images. Hierarchical only: ``level`` (shared path positions a class
    needs), ``shift`` (subtracted from every activation first), ``path_accuracy`` (per level,
    on the calibration images) and ``reference_level`` (the level the reference's rule picks).
    """

    method: str
    coverage: float
    n: int
    q_hat: float
    level: int | None = None
    shift: float = 0.0
    path_accuracy: tuple[float, ...] = field(default_factory=tuple)
    reference_level: int | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["q_hat"] = None if math.isinf(self.q_hat) else self.q_hat  # strict JSON
        d["path_accuracy"] = list(self.path_accuracy)
        return d


class Method:
    """Base of the registered methods."""

    name = ""
    title = ""

    def unusable(self, weight: np.ndarray) -> str | None:
        """None when the method works with this final layer, else why not."""
        return None

    def calibrate(self, out: Outputs, labels: np.ndarray, coverage: float,
                  rng: np.random.Generator) -> Threshold:
        raise NotImplementedError

    def scores(self, out: Outputs, threshold: Threshold, rng: np.random.Generator
               ) -> np.ndarray:
        """(N, C) scores the set compares with ``threshold.q_hat``."""
        raise NotImplementedError

    def sets(self, out: Outputs, threshold: Threshold, rng: np.random.Generator) -> np.ndarray:
        """(N, C) bool: the prediction set of every image."""
        if threshold.method != self.name:
            raise ValueError(f"a {threshold.method} threshold given to {self.name}")
        return self.scores(out, threshold, rng) <= threshold.q_hat


_METHODS: dict[str, Method] = {}


def register_method(cls: type[Method]) -> type[Method]:
    _METHODS[cls.name] = cls()
    return cls


def method_names() -> list[str]:
    return list(_METHODS)


def get_method(name: str) -> Method:
    if name not in _METHODS:
        raise ValueError(f"unknown conformal method {name!r}; choose from "
                         f"{', '.join(_METHODS)}")
    return _METHODS[name]


def methods_for(weight: np.ndarray) -> list[str]:
    """The registered methods that work with this final layer, in registry order."""
    return [n for n, m in _METHODS.items() if m.unusable(weight) is None]


def _labels(labels: np.ndarray) -> np.ndarray:
    return np.asarray(labels, dtype=np.int64)


@register_method
class THR(Method):
    name, title = "thr", "THR (LAC)"

    def calibrate(self, out, labels, coverage, rng):
        s = thr_scores(out.probs()[0][out.rows, _labels(labels)])
        return Threshold(self.name, check_coverage(coverage), len(s),
                         conformal_quantile(s, coverage))

    def scores(self, out, threshold, rng):
        return thr_scores(out.probs()[0][out.rows])


@register_method
class APS(Method):
    """Randomised as torchcp's default: u ~ U[0, 1) per calibration image and per image and
    class at prediction time, drawn from ``rng`` (qpm seeds it, so a run repeats)."""

    name, title = "aps", "APS"

    def calibrate(self, out, labels, coverage, rng):
        p, mass = out.probs()  # aps_scores(p, u) = mass - u * p
        rows, y = out.rows, _labels(labels)
        s = mass[rows, y] - rng.random(len(y)) * p[rows, y]  # one u per image (torchcp)
        return Threshold(self.name, check_coverage(coverage), len(s),
                         conformal_quantile(s, coverage))

    def scores(self, out, threshold, rng):
        p, mass = out.probs()
        p, mass = p[out.rows], mass[out.rows]
        return mass - rng.random(p.shape) * p


@register_method
class Hierarchical(Method):
    """CHiQPM's score (see :func:`qpm.conformal.scores.hierarchical_scores`).

    Calibration, as in the reference: the activations are shifted by the smallest activation
    on the calibration images (so all are >= 0; no change after a ReLU); ``level`` is the
    deepest number of path positions the true class shares with the prediction on enough
    calibration images, and q_hat the conformal quantile of the true classes' scores at that
    level. "Enough" is ceil((n + 1)(1 - alpha)) images, the count the quantile needs: the
    reference asks for a share 1 - alpha (``reference_level``), and where the two differ its
    threshold lands among classes off the path, whose score it sets to 0. Here a class off the
    path at ``level`` is never in the set, so the set is always a subtree under the predicted
    path (at level 0: every class that passes the threshold).
    """

    name, title = "hierarchical", "CHiQPM (hierarchical)"

    def unusable(self, weight):
        return is_hierarchical(weight)

    def calibrate(self, out, labels, coverage, rng):
        coverage = check_coverage(coverage)
        values = np.asarray(out.values, dtype=np.float64)
        shift = float(values.min()) if values.size else 0.0
        stats, labels = out.path_stats(), _labels(labels)
        k = stats.per_class
        on_path = stats.depth[out.rows, labels]
        acc = path_accuracy(on_path, k)
        need = rank(len(labels), coverage)
        level = max((lv for lv in range(k + 1) if np.count_nonzero(on_path >= lv) >= need),
                    default=0)
        reference = int(np.argmin(acc >= coverage)) if not np.all(acc >= coverage) else k
        s = path_scores(stats, out.rows, labels, level, shift)  # off the path: inf
        return Threshold(self.name, coverage, len(labels), conformal_quantile(s, coverage),
                         level=level, shift=shift, path_accuracy=tuple(float(a) for a in acc),
                         reference_level=reference)

    def scores(self, out, threshold, rng):
        return path_scores(out.path_stats(), out.rows, None, threshold.level or 0,
                           threshold.shift)


def threshold_from_dict(d: dict) -> Threshold:
    """The inverse of :meth:`Threshold.to_dict`."""
    q = d.get("q_hat")
    t = Threshold(**{**d, "q_hat": math.inf if q is None else float(q),
                     "path_accuracy": tuple(d.get("path_accuracy") or ())})
    get_method(t.method)  # an unknown method name is refused here
    return t
