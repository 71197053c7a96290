"""Repair duplicate columns: give every class a distinct set of k selected features.

Each class lists its k-subsets of the selected features lazily in order of decreasing value
(a best-first search over "move one chosen position one step down the sorted list", which
visits every subset once). Classes then claim subsets: a class whose best free subset is
wanted by no other class takes it; when several want the same subset, the one that would
lose most by moving to its next free subset keeps it and the others move on. Every round
settles at least one class, and since C(n, k) >= C (checked when the problem is built) a free
subset always exists, so the repair always ends with all columns unique.
"""

from __future__ import annotations

import heapq

import numpy as np


class _Subsets:
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


def unique_columns(A: np.ndarray, selected: np.ndarray, k: int) -> np.ndarray:
    """An (F, C) uint8 assignment, exactly k selected features per class, all columns distinct.

    Starts from every class's top k and changes only classes that collide.
    """
    F, C = A.shape
    sel = np.asarray(selected, dtype=np.int64)
    order = np.argsort(-A[sel], axis=0, kind="stable")  # (n, C) positions into sel
    feats = sel[order]  # each class's selected features, best first
    top = np.sort(feats[:k], axis=0)
    w = np.zeros((F, C), dtype=np.uint8)
    if np.unique(top.T, axis=0).shape[0] == C:
        w[feats[:k], np.arange(C)[None, :]] = 1
        return w

    lists = [_Subsets(A[feats[:, c], c], k) for c in range(C)]
    ptr = [0] * C
    taken: set[tuple[int, ...]] = set()
    choice: dict[int, tuple[int, ...]] = {}

    def key(c: int, m: int) -> tuple[int, ...] | None:
        item = lists[c].get(m)
        return None if item is None else tuple(sorted(feats[list(item[0]), c].tolist()))

    def first_free(c: int, start: int) -> int | None:
        m = start
        while True:
            kk = key(c, m)
            if kk is None:
                return None
            if kk not in taken:
                return m
            m += 1

    open_classes = list(range(C))
    while open_classes:
        wanted: dict[tuple[int, ...], list[int]] = {}
        for c in open_classes:
            m = first_free(c, ptr[c])
            if m is None:  # cannot happen when C(n, k) >= C
                raise RuntimeError("no free feature subset left for a class")
            ptr[c] = m
            wanted.setdefault(key(c, m), []).append(c)
        for subset, classes in wanted.items():
            if len(classes) == 1:
                winner = classes[0]
            else:
                taken.add(subset)  # temporarily, to find each class's next free subset
                regrets = []
                for c in classes:
                    nxt = first_free(c, ptr[c] + 1)
                    here = lists[c].get(ptr[c])[1]
                    regrets.append(np.inf if nxt is None else here - lists[c].get(nxt)[1])
                taken.discard(subset)
                winner = classes[int(np.argmax(regrets))]
            taken.add(subset)
            choice[winner] = subset
        open_classes = [c for c in open_classes if c not in choice]

    for c, subset in choice.items():
        w[list(subset), c] = 1
    return w
