"""What the conformal methods read from a model: its outputs on N images, with what the
methods derive from them computed once.

``take(index)`` gives the outputs of some of the images; the derived arrays stay with the
outputs they were taken from (the *root*) and are indexed when used, so evaluating many
calibration splits of one test pass costs a few (rows, C) slices per split.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from qpm.conformal.paths import class_columns, shared_depth, sorted_paths
from qpm.conformal.scores import aps_scores, softmax

# Images per block when sorting paths: (block, C, k) arrays stay small at ImageNet size.
BLOCK = 512


@dataclass(frozen=True)
class PathStats:
    """Each class's path on each image, reduced to what the hierarchical score needs
    (activations as the layer gives them; a constant shift is applied at scoring time)."""

    depth: np.ndarray  # (N, C) path positions shared with the predicted class
    split: np.ndarray  # (N, C) activation where the path leaves the predicted one (0: never)
    prefix: np.ndarray  # (N, C, k + 1) sums of the path's first j activations, j = 0..k
    shared: np.ndarray  # (N, C) sum of the shared activations, prefix at depth

    @classmethod
    def of(cls, values: np.ndarray, weight: np.ndarray, predicted: np.ndarray) -> PathStats:
        cols = class_columns(weight)
        c, k = cols.shape
        parts: list[tuple] = []
        for start in range(0, len(values), BLOCK):
            feats, acts = sorted_paths(values[start:start + BLOCK], cols)
            d = shared_depth(feats, predicted[start:start + BLOCK])
            split = np.take_along_axis(acts, np.minimum(d, k - 1)[..., None], axis=-1)[..., 0]
            prefix = np.concatenate([np.zeros(acts.shape[:-1] + (1,)),
                                     np.cumsum(acts, axis=-1)], axis=-1)
            shared = np.take_along_axis(prefix, d[..., None], axis=-1)[..., 0]
            parts.append((d, np.where(d < k, split, 0.0), prefix, shared))
        if not parts:
            return cls(np.zeros((0, c), np.int64), np.zeros((0, c)), np.zeros((0, c, k + 1)),
                       np.zeros((0, c)))
        return cls(*(np.concatenate(p) for p in zip(*parts, strict=True)))

    @property
    def per_class(self) -> int:
        return self.prefix.shape[-1] - 1


@dataclass(frozen=True)
class Outputs:
    """What a model gives for N images: logits (N, C), the final layer's input (N, n) and its
    weights (C, n) (``values @ weight.T`` + a bias = logits)."""

    logits: np.ndarray
    values: np.ndarray
    weight: np.ndarray
    _root: Outputs | None = field(default=None, repr=False, compare=False)
    _rows: np.ndarray | None = field(default=None, repr=False, compare=False)
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        lg, v, w = (np.asarray(x) for x in (self.logits, self.values, self.weight))
        if lg.ndim != 2 or v.ndim != 2 or w.ndim != 2 or lg.shape[0] != v.shape[0] \
                or lg.shape[1] != w.shape[0] or v.shape[1] != w.shape[1]:
            raise ValueError(f"shapes do not fit: logits {lg.shape}, values {v.shape}, "
                             f"weight {w.shape}")

    def __len__(self) -> int:
        return int(np.asarray(self.logits).shape[0])

    @property
    def rows(self) -> np.ndarray:
        """These images' rows in the root's derived arrays."""
        return np.arange(len(self)) if self._rows is None else self._rows

    def take(self, index: np.ndarray) -> Outputs:
        index = np.asarray(index)
        return Outputs(np.asarray(self.logits)[index], np.asarray(self.values)[index],
                       self.weight, self._root or self, self.rows[index])

    def _derived(self, key: str, make):
        root = self._root or self
        if key not in root._cache:
            root._cache[key] = make(root)
        return root._cache[key]

    def probs(self) -> tuple[np.ndarray, np.ndarray]:
        """The root's softmax probabilities and APS's deterministic score (the mass ranked
        up to each class), both (N_root, C): index them with :attr:`rows`."""
        def make(root):
            p = softmax(root.logits)
            return p, aps_scores(p)

        return self._derived("probs", make)

    def path_stats(self) -> PathStats:
        """The root's :class:`PathStats` (index them with :attr:`rows`)."""
        return self._derived("paths", lambda root: PathStats.of(
            np.asarray(root.values, dtype=np.float64), root.weight, root.predicted))

    def depth(self) -> np.ndarray:
        """(N, C): how many path positions each class shares with the predicted class."""
        return self.path_stats().depth[self.rows]

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


def path_scores(stats: PathStats, rows: np.ndarray, classes: np.ndarray | None, level: int,
                shift: float) -> np.ndarray:
    """The hierarchical score (:func:`qpm.conformal.scores.hierarchical_scores`) from
    :class:`PathStats`, with every activation shifted by ``-shift``, and +inf for a class
    sharing fewer than ``level`` positions (never in a set). ``classes`` None: every class,
    (len(rows), C); else one class per row, (len(rows),)."""
    k = stats.per_class
    if classes is None:
        d, split, shared = stats.depth[rows], stats.split[rows], stats.shared[rows]
        before = stats.prefix[rows, :, level]
    else:
        d, split = stats.depth[rows, classes], stats.split[rows, classes]
        shared, before = stats.shared[rows, classes], stats.prefix[rows, classes, level]
    score = -np.where(d < k, split - shift, 0.0) - ((shared - before) - shift * (d - level))
    return np.where(d >= level, score, np.inf)
