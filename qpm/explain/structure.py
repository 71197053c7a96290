"""What a sparse final layer says about the classes: their features and their close pairs."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np

from qpm.text import printable


@dataclass(frozen=True)
class FeatureCounts:
    """How many features a sparse layer selects and how many of them some class uses.

    The assignment may select features no class uses (the paper's model allows it); with
    more selected features than ``classes * per_class`` some must stay unused.
    """

    selected: int
    used: int
    classes: int
    per_class: int  # features of the class with the most (k for QPM)

    @classmethod
    def of(cls, weight: np.ndarray) -> FeatureCounts:
        """From a (C, n) layer whose n columns are its selected features."""
        nz = np.asarray(weight) != 0
        per_class = int(nz.sum(axis=1).max()) if nz.size else 0
        return cls(int(nz.shape[1]), int(nz.any(axis=0).sum()), int(nz.shape[0]), per_class)

    def line(self) -> str:
        return (f"{self.selected} features selected, {self.used} used "
                f"({self.classes} classes, up to {self.per_class} features each)")

    def warning(self) -> str | None:
        """One line when more features are selected than the classes can use."""
        room = self.classes * self.per_class
        if self.selected <= room:
            return None
        return (f"warning: {self.selected} features selected but {self.classes} classes x "
                f"{self.per_class} features can use at most {room}: {self.selected - room} "
                "must stay unused")

    def to_dict(self) -> dict:
        return {"selected": self.selected, "used": self.used, "classes": self.classes,
                "per_class": self.per_class}


@dataclass(frozen=True)
class ClassPair:
    """Two classes whose feature sets differ in at most one feature on each side."""

    a: int
    b: int
    shared: tuple[int, ...]
    only_a: tuple[int, ...]
    only_b: tuple[int, ...]

    def ordered_features(self) -> list[int]:
        """Distinguishing features of ``a``, then the shared ones, then those of ``b``."""
        return [*self.only_a, *self.shared, *self.only_b]


def class_features(
    weight: np.ndarray, selection: np.ndarray | None = None
) -> dict[int, list[tuple[int, float]]]:
    """Class -> [(backbone feature index, weight)] of its non-zero weights, largest |w| first.

    ``weight`` is (C, n); ``selection`` maps its n columns to backbone feature indices
    (None: column j is feature j).
    """
    w = np.asarray(weight, dtype=np.float64)
    sel = np.arange(w.shape[1]) if selection is None else np.asarray(selection, dtype=np.int64)
    out = {}
    for c in range(w.shape[0]):
        cols = np.flatnonzero(w[c])
        cols = cols[np.argsort(-np.abs(w[c, cols]), kind="stable")]
        out[c] = [(int(sel[j]), float(w[c, j])) for j in cols]
    return out


def similar_pairs(features: dict[int, list[tuple[int, float]]]) -> list[ClassPair]:
    """Pairs of classes sharing all but one of their features (k-1 of k for QPM).

    A pair qualifies when the shared count is at least max(|S_a|, |S_b|) - 1 and at least 1.
    Sorted by most shared features first, then by class indices.
    """
    sets = {c: {f for f, _ in feats} for c, feats in features.items()}
    pairs = []
    for a, b in combinations(sorted(sets), 2):
        shared = sets[a] & sets[b]
        if shared and len(shared) >= max(len(sets[a]), len(sets[b])) - 1:
            pairs.append(
                ClassPair(
                    a,
                    b,
                    tuple(sorted(shared)),
                    tuple(sorted(sets[a] - shared)),
                    tuple(sorted(sets[b] - shared)),
                )
            )
    pairs.sort(key=lambda p: (-len(p.shared), p.a, p.b))
    return pairs


def closest_pairs(
    features: dict[int, list[tuple[int, float]]], covered: set[int]
) -> list[ClassPair]:
    """For each class not in ``covered``: the pair with the class sharing most features.

    Ties go to the smaller class index; classes sharing nothing with any other get none.
    Each pair appears once (smaller class first).
    """
    sets = {c: {f for f, _ in feats} for c, feats in features.items()}
    seen: set[tuple[int, int]] = set()
    out = []
    for c in sorted(sets):
        if c in covered:
            continue
        best, best_n = None, 0
        for o in sorted(sets):
            n = len(sets[c] & sets[o]) if o != c else 0
            if n > best_n:
                best, best_n = o, n
        if best is None:
            continue
        a, b = min(c, best), max(c, best)
        if (a, b) in seen:
            continue
        seen.add((a, b))
        shared = sets[a] & sets[b]
        out.append(ClassPair(a, b, tuple(sorted(shared)), tuple(sorted(sets[a] - shared)),
                             tuple(sorted(sets[b] - shared))))
    return out


def feature_label(index: int, feature_names: dict[int, str] | None = None) -> str:
    if feature_names and index in feature_names:
        return printable(feature_names[index])
    return f"feature {index}"


def explanation_dict(
    weight: np.ndarray,
    selection: np.ndarray | None,
    class_names: list[str],
    feature_names: dict[int, str] | None = None,
    model_type: str = "qpm",
    extra: dict | None = None,
) -> dict:
    """The JSON-ready global explanation of a layer: classes, features, close pairs."""
    feats = class_features(weight, selection)
    pairs = similar_pairs(feats)
    closest = closest_pairs(feats, {c for p in pairs for c in (p.a, p.b)})
    used = sorted({f for fs in feats.values() for f, _ in fs})
    layer = np.asarray(weight)
    sel = np.arange(layer.shape[1]) if selection is None else np.asarray(selection)
    counts = FeatureCounts.of(layer)
    users = {f: [c for c in sorted(feats) if any(g == f for g, _ in feats[c])] for f in used}
    names = [printable(n) for n in class_names]

    def as_dict(p: ClassPair) -> dict:
        return {
            "classes": [p.a, p.b],
            "names": [names[p.a], names[p.b]],
            "shared": list(p.shared),
            "distinguishing": {str(p.a): list(p.only_a), str(p.b): list(p.only_b)},
        }

    return {
        "model_type": model_type,
        "n_classes": len(class_names),
        "n_features": len(used),  # used by at least one class
        "n_selected": counts.selected,
        "counts": counts.to_dict(),
        "counts_line": counts.line(),
        "counts_warning": counts.warning(),
        "selected": [int(f) for f in sel],
        "unused": sorted(set(int(f) for f in sel) - set(used)),
        "features": [{"index": f, "name": feature_label(f, feature_names), "classes": users[f]}
                     for f in used],
        "classes": [
            {
                "index": c,
                "name": names[c],
                "features": [
                    {"index": f, "name": feature_label(f, feature_names), "weight": w}
                    for f, w in feats[c]
                ],
            }
            for c in range(len(class_names))
        ],
        # pairs sharing all but one feature (k-1 of k for QPM)
        "similar_pairs": [as_dict(p) for p in pairs],
        # for every class in no such pair: the class it shares most features with
        "closest_pairs": [as_dict(p) for p in closest],
        **(extra or {}),
    }
