"""CHiQPM's hierarchical explanation of one image, as data: a prefix tree of class paths.

Every class's path is its k features in the order this image activates them (largest first,
:mod:`qpm.conformal.paths`). Classes whose paths start with the same features share those
nodes; the predicted class's path is one branch, and a class sharing j features with it
leaves that branch at depth j. As in the reference's drawing, a path stops at its first
feature that is not active on this image (activation <= 0: after a ReLU, absent; in a QPM
layer, at or below its training mean), since the order of absent features means nothing;
classes whose paths stop at the same node are shown together there.

The *local* tree holds the classes that share the predicted class's first feature (the
reference's default), plus any classes the caller adds (e.g. the conformal set).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from qpm.conformal.paths import class_columns, shared_depth, sorted_paths


@dataclass
class Node:
    """One feature on one or more class paths (the root has none)."""

    feature: int | None  # backbone feature index on the edge into this node
    activation: float  # that feature's activation on the image
    depth: int  # 0 for the root; j for the j-th path position
    path: tuple[int, ...]  # the features from the root to here
    classes: list[int] = field(default_factory=list)  # classes whose path runs through here
    ending: list[int] = field(default_factory=list)  # classes whose drawn path ends here
    children: list[Node] = field(default_factory=list)

    def walk(self) -> Iterable[Node]:
        yield self
        for child in self.children:
            yield from child.walk()

    def to_dict(self) -> dict:
        return {"feature": self.feature, "activation": self.activation, "depth": self.depth,
                "path": list(self.path), "classes": list(self.classes),
                "ending": list(self.ending)}


@dataclass
class Hierarchy:
    """The prefix tree of one image. ``paths[c]``: class c's whole path as (feature,
    activation) pairs; ``shared[c]``: how many path positions c shares with ``predicted``."""

    predicted: int
    per_class: int
    root: Node
    paths: dict[int, list[tuple[int, float]]]
    shared: dict[int, int]
    scope: str  # "local" or "all"

    @property
    def classes(self) -> list[int]:
        return sorted(self.paths)

    def levels(self) -> list[list[Node]]:
        """The feature nodes at depth 1..k (a level may be empty)."""
        out: list[list[Node]] = [[] for _ in range(self.per_class)]
        for node in self.root.walk():
            if node.depth:
                out[node.depth - 1].append(node)
        return out

    def node_of(self, cls: int) -> Node:
        """The node where class ``cls``'s drawn path ends."""
        for node in self.root.walk():
            if cls in node.ending:
                return node
        raise KeyError(f"class {cls} is not in this tree")

    def predicted_path(self) -> list[Node]:
        """The nodes of the predicted class's drawn path, root first."""
        end = self.node_of(self.predicted).path
        return [n for n in self.root.walk() if end[:len(n.path)] == n.path]

    def to_dict(self) -> dict:
        return {
            "predicted": self.predicted, "per_class": self.per_class, "scope": self.scope,
            "levels": [[n.to_dict() for n in level] for level in self.levels()],
            "classes": {str(c): {"shared_with_predicted": self.shared[c],
                                 "path": [[f, a] for f, a in self.paths[c]],
                                 "ends_at": list(self.node_of(c).path)}
                        for c in self.classes},
        }


def build_hierarchy(values: np.ndarray, weight: np.ndarray, predicted: int,
                    selected: np.ndarray | None = None, scope: str = "local",
                    also: Iterable[int] = ()) -> Hierarchy:
    """The tree of one image from the layer's input ``values`` (n,) and binary ``weight``
    (C, n). ``selected`` maps the n columns to backbone feature indices (default: the
    columns). ``scope`` "local": the classes sharing the predicted class's first feature,
    "all": every class; ``also``: classes added either way."""
    if scope not in ("local", "all"):
        raise ValueError(f"scope must be 'local' or 'all', got {scope!r}")
    cols = class_columns(weight)
    v = np.asarray(values, dtype=np.float64).reshape(1, -1)
    feats, acts = sorted_paths(v, cols)
    feats, acts = feats[0], acts[0]
    depth = shared_depth(feats[None], np.array([predicted]))[0]
    names = np.arange(v.shape[1]) if selected is None else np.asarray(selected)
    chosen = set(np.flatnonzero(depth >= 1).tolist()) if scope == "local" else set(
        range(len(depth)))
    chosen |= {int(c) for c in also} | {int(predicted)}
    root = Node(None, 0.0, 0, ())
    paths, shared = {}, {}
    for c in sorted(chosen):
        path = [(int(names[f]), float(a)) for f, a in zip(feats[c], acts[c], strict=True)]
        paths[c], shared[c] = path, int(depth[c])
        node = root
        node.classes.append(c)
        for f, a in path:
            if a <= 0:  # absent on this image: the drawn path stops
                break
            node = _child(node, f, a)
            node.classes.append(c)
        node.ending.append(c)
    return Hierarchy(int(predicted), cols.shape[1], root, paths, shared, scope)


def _child(node: Node, feature: int, activation: float) -> Node:
    for child in node.children:
        if child.feature == feature:
            return child
    child = Node(feature, activation, node.depth + 1, node.path + (feature,))
    node.children.append(child)
    return child
