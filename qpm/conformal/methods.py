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

from qpm.conformal.paths import class_columns, is_hierarchical, path_accuracy
from qpm.conformal.quantile import check_coverage, conformal_quantile, rank
from qpm.conformal.scores import (
    aps_scores,
    hierarchical_parts,
    hierarchical_scores,
    softmax,
    thr_scores,
)

# Images per block when scoring paths: (block, C, k) arrays stay small at ImageNet size.
BLOCK = 512


@dataclass(frozen=True)
class Outputs:
    """What a model gives for N images: logits (N, C), the final layer's input (N, n) and its
    weights (C, n) (``values @ weight.T`` + a bias = logits)."""

    logits: np.ndarray
    values: np.ndarray
    weight: np.ndarray
    # (depth, activations) of the class paths, computed once (see paths()) and sliced by take()
    _paths: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False,
                                                         compare=False)

    def __post_init__(self) -> None:
        lg, v, w = (np.asarray(x) for x in (self.logits, self.values, self.weight))
        if lg.ndim != 2 or v.ndim != 2 or w.ndim != 2 or lg.shape[0] != v.shape[0] \
                or lg.shape[1] != w.shape[0] or v.shape[1] != w.shape[1]:
            raise ValueError(f"shapes do not fit: logits {lg.shape}, values {v.shape}, "
                             f"weight {w.shape}")

    def __len__(self) -> int:
        return int(np.asarray(self.logits).shape[0])

    def take(self, index: np.ndarray) -> Outputs:
        paths = None if self._paths is None else (self._paths[0][index], self._paths[1][index])
        return Outputs(np.asarray(self.logits)[index], np.asarray(self.values)[index],
                       self.weight, paths)

    def paths(self) -> tuple[np.ndarray, np.ndarray]:
        """Each class's shared depth with the predicted class (N, C) and its path's
        activations (N, C, k), computed once in blocks of :data:`BLOCK` images. A constant
        shift of the activations changes neither the order nor the depth, so the
        hierarchical method subtracts its shift from these."""
        if self._paths is None:
            cols = class_columns(self.weight)
            values = np.asarray(self.values, dtype=np.float64)
            pred = self.predicted
            depth, acts = [], []
            for start in range(0, len(self), BLOCK):
                d, a = hierarchical_parts(values[start:start + BLOCK], cols,
                                          pred[start:start + BLOCK])
                depth.append(d)
                acts.append(a)
            if not depth:
                c, k = cols.shape
                depth, acts = [np.zeros((0, c), dtype=np.int64)], [np.zeros((0, c, k))]
            object.__setattr__(self, "_paths", (np.concatenate(depth), np.concatenate(acts)))
        return self._paths

    @property
    def predicted(self) -> np.ndarray:
        return np.asarray(self.logits).argmax(axis=1)

    def logit_mismatch(self) -> float:
        """How far ``values @ weight.T`` is from the logits up to a per-class constant (the
        layer's bias), relative to the logits' spread: ~1e-7 when ``values`` is really what
        the layer multiplies (float32), large when it is not (e.g. a ReLU left out)."""
        lg = np.asarray(self.logits, dtype=np.float64)
        if lg.shape[0] < 2:
            return 0.0
        rest = lg - np.asarray(self.values, dtype=np.float64) @ np.asarray(self.weight).T
        rest = rest - rest.mean(axis=0)
        return float(np.abs(rest).max() / max(float(np.ptp(lg)), 1e-12))


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


def _true_scores(all_scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return all_scores[np.arange(all_scores.shape[0]), np.asarray(labels, dtype=np.int64)]


@register_method
class THR(Method):
    name, title = "thr", "THR (LAC)"

    def calibrate(self, out, labels, coverage, rng):
        s = _true_scores(thr_scores(softmax(out.logits)), labels)
        return Threshold(self.name, check_coverage(coverage), len(s),
                         conformal_quantile(s, coverage))

    def scores(self, out, threshold, rng):
        return thr_scores(softmax(out.logits))


@register_method
class APS(Method):
    """Randomised as torchcp's default: u ~ U[0, 1) per calibration image and per image and
    class at prediction time, drawn from ``rng`` (qpm seeds it, so a run repeats)."""

    name, title = "aps", "APS"

    def calibrate(self, out, labels, coverage, rng):
        p = softmax(out.logits)
        s = _true_scores(aps_scores(p, rng.random(p.shape)), labels)
        return Threshold(self.name, check_coverage(coverage), len(s),
                         conformal_quantile(s, coverage))

    def scores(self, out, threshold, rng):
        p = softmax(out.logits)
        return aps_scores(p, rng.random(p.shape))


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
        depth, acts = out.paths()
        acts = acts - shift
        k = acts.shape[-1]
        labels = np.asarray(labels, dtype=np.int64)
        rows = np.arange(len(labels))
        on_path = depth[rows, labels]
        acc = path_accuracy(on_path, k)
        need = rank(len(labels), coverage)
        level = max((lv for lv in range(k + 1) if np.count_nonzero(on_path >= lv) >= need),
                    default=0)
        reference = int(np.argmin(acc >= coverage)) if not np.all(acc >= coverage) else k
        s = hierarchical_scores(depth, acts, level)[rows, labels]
        s = np.where(on_path >= level, s, np.inf)  # off the path: never in a set
        return Threshold(self.name, coverage, len(labels), conformal_quantile(s, coverage),
                         level=level, shift=shift, path_accuracy=tuple(float(a) for a in acc),
                         reference_level=reference)

    def scores(self, out, threshold, rng):
        depth, acts = out.paths()
        s = hierarchical_scores(depth, acts - threshold.shift, threshold.level or 0)
        return np.where(depth >= (threshold.level or 0), s, np.inf)


def threshold_from_dict(d: dict) -> Threshold:
    """The inverse of :meth:`Threshold.to_dict`."""
    q = d.get("q_hat")
    t = Threshold(**{**d, "q_hat": math.inf if q is None else float(q),
                     "path_accuracy": tuple(d.get("path_accuracy") or ())})
    get_method(t.method)  # an unknown method name is refused here
    return t
