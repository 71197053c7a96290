"""Repair duplicate columns: give every class a distinct set of k selected features.

Each class lists its k-subsets of the selected features lazily in order of decreasing value
(a best-first search over "move one chosen position one step down the sorted list", which
visits every subset once). Classes whose top-k sets are unique keep them; the classes in play
(those that collide, or all classes when C is small) are then matched to distinct subsets by
an exact rectangular assignment (scipy's linear_sum_assignment) over each one's best |D|
subsets not already used, D being the classes in play. A class never needs more: among its
best |D| free subsets at most |D|-1 are taken by the others. With all classes in play this is
the optimal unique assignment for the selection. Since C(n, k) >= C (checked when the problem
is built) every class has enough free subsets, so the repair always succeeds.
"""

from __future__ import annotations

import heapq

import numpy as np
from scipy.optimize import linear_sum_assignment


class Subsets:
    """The k-subsets of one class's sorted values, generated lazily best-first."""

    def __init__(self, values: np.ndarray, k: int) -> None:
        self.values = values  # sorted descending
        self.k = k
        start = tuple(range(k))
        self.heap = [(-float(values[list(start)].sum()), start)]
        self.seen = {start}
        self.items: list[tuple[tuple[int, ...], float]] = []

    def get(self, m: int) -> tuple[tuple[int, ...], float] | None:
        """The m-th best subset (0-based), or None when there are fewer."""
        n, k = self.values.size, self.k
        while len(self.items) <= m and self.heap:
            neg, pos = heapq.heappop(self.heap)
            self.items.append((pos, -neg))
            for t in range(k):
                q = pos[t] + 1
                if q < n and (t == k - 1 or q < pos[t + 1]):
                    nxt = pos[:t] + (q,) + pos[t + 1 :]
                    if nxt not in self.seen:
                        self.seen.add(nxt)
                        heapq.heappush(self.heap, (-float(self.values[list(nxt)].sum()), nxt))
        return self.items[m] if m < len(self.items) else None


def _top_sets(A: np.ndarray, sel: np.ndarray, k: int):
    """Each class's selected features best first, its top-k matrix and which classes collide."""
    F, C = A.shape
    order = np.argsort(-A[sel], axis=0, kind="stable")  # (n, C) positions into sel
    feats = sel[order]  # each class's selected features, best first
    w = np.zeros((F, C), dtype=np.uint8)
    w[feats[:k], np.arange(C)[None, :]] = 1
    top = np.sort(feats[:k], axis=0).T
    _, inverse, counts = np.unique(top, axis=0, return_inverse=True, return_counts=True)
    return feats, w, top, counts[inverse.reshape(-1)] > 1


def greedy_unique_columns(A: np.ndarray, selected: np.ndarray, k: int,
                          taken: frozenset[tuple[int, ...]] = frozenset()) -> np.ndarray:
    """A fast valid repair: like :func:`unique_columns`, but colliding classes take their
    best free subset one after the other (largest regret first) instead of an exact matching.

    Never better than the exact repair; meant for scoring many trial selections (a local
    search), where any feasible assignment gives a valid value.
    """
    F, C = A.shape
    sel = np.asarray(selected, dtype=np.int64)
    feats, w, top, collide = _top_sets(A, sel, k)
    if taken:
        collide |= np.array([tuple(t) in taken for t in top.tolist()], dtype=bool)
    if not collide.any():
        return w
    play = np.flatnonzero(collide)
    used = {tuple(top[c].tolist()) for c in np.flatnonzero(~collide).tolist()} | set(taken)
    vals = np.take_along_axis(A[sel], np.argsort(-A[sel], axis=0, kind="stable"), axis=0)
    # Regret: what the cheapest move away from the top set costs (k-th minus (k+1)-th).
    regret = vals[k - 1, play] - (vals[k, play] if sel.size > k else 0.0)
    for c in play[np.argsort(-regret, kind="stable")].tolist():
        subsets = Subsets(A[feats[:, c], c], k)
        m = 0
        while True:
            item = subsets.get(m)
            if item is None:  # cannot happen when C(n, k) >= C
                raise RuntimeError("not enough feature subsets for a unique assignment")
            m += 1
            key = tuple(sorted(feats[list(item[0]), c].tolist()))
            if key not in used:
                break
        used.add(key)
        w[:, c] = 0
        w[list(key), c] = 1
    return w


def unique_columns(
    A: np.ndarray, selected: np.ndarray, k: int, exact_up_to: int = 40,
    taken: frozenset[tuple[int, ...]] = frozenset(),
) -> np.ndarray:
    """An (F, C) uint8 assignment, exactly k selected features per class, all columns distinct.

    Starts from every class's top k. With C <= ``exact_up_to`` all classes are re-matched
    (optimal for this selection); otherwise only the colliding classes are. ``taken``: sorted
    feature tuples that other classes hold already, which no class here may take.
    """
    F, C = A.shape
    sel = np.asarray(selected, dtype=np.int64)
    feats, w, top, collide = _top_sets(A, sel, k)
    if taken:
        collide |= np.array([tuple(t) in taken for t in top.tolist()], dtype=bool)
    if not collide.any():
        return w

    play = np.arange(C) if C <= exact_up_to else np.flatnonzero(collide)
    in_play = set(play.tolist())
    fixed = {tuple(top[c].tolist()) for c in range(C) if c not in in_play} | set(taken)
    columns: dict[tuple[int, ...], int] = {}
    rows: list[dict[int, float]] = []
    for c in play:
        subsets = Subsets(A[feats[:, c], c], k)
        found: dict[int, float] = {}
        m = 0
        while len(found) < play.size:
            item = subsets.get(m)
            if item is None:  # cannot happen when C(n, k) >= C
                raise RuntimeError("not enough feature subsets for a unique assignment")
            m += 1
            key = tuple(sorted(feats[list(item[0]), c].tolist()))
            if key in fixed:
                continue
            found[columns.setdefault(key, len(columns))] = item[1]
        rows.append(found)
    cost = np.full((play.size, len(columns)), np.inf)
    for r, found in enumerate(rows):
        cost[r, list(found)] = -np.array(list(found.values()))
    r_idx, c_idx = linear_sum_assignment(cost)
    keys = list(columns)
    for r, col in zip(r_idx, c_idx, strict=True):
        c = int(play[r])
        w[:, c] = 0
        w[list(keys[col]), c] = 1
    return w
