"""Assignments in which every forced class pair shares exactly k−1 features (preset chiqpm).

Within a selection of n features a class's set is a k-subset, held here as a bit mask over the
n positions. Two sets share k−1 features when one is the other with one feature swapped, so a
class whose forced partners already have sets can only take a set one swap away from each of
them. The closest-pair graph of real data comes in tight clusters (hub classes close to many
others), so each connected part is first tried as a sunflower: one core of k−1 features for
the whole part plus one feature of its own per class. A part that does not fit that way is
placed depth first (from its best-connected class, breadth first), trying every class's
possible sets best value first and backtracking when a class has none left; single classes
then move to better sets that still fit their partners. The classes in no forced pair take
the best distinct sets that remain (:func:`qpm.assignment.repair.unique_columns`).

The same search answers whether the pair graph fits at all (:func:`embeddable`): with the
first set fixed (every k-subset looks alike before any is taken), an exhaustive search that
runs out of options is a proof that no assignment exists, for any selection.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

import numpy as np
from scipy.optimize import linear_sum_assignment

from qpm.assignment.repair import Subsets, greedy_unique_columns, unique_columns

# Candidate sets the search may try before it gives up undecided.
BUDGET = 200_000
# Passes of single-class improvement after the search.
ASCENT_PASSES = 10


class _Undecided(Exception):
    """The search spent its budget."""


def bits(mask: int) -> list[int]:
    """The positions set in ``mask``, ascending."""
    out = []
    while mask:
        low = mask & -mask
        out.append(low.bit_length() - 1)
        mask ^= low
    return out


def adjacency(pairs: np.ndarray) -> dict[int, list[int]]:
    """Class -> its forced partners."""
    adj: dict[int, list[int]] = {}
    for a, b in np.asarray(pairs, dtype=np.int64).reshape(-1, 2).tolist():
        adj.setdefault(a, []).append(b)
        adj.setdefault(b, []).append(a)
    return adj


def search_parts(adj: dict[int, list[int]]) -> list[list[int]]:
    """The connected parts of the pair graph, largest first, each breadth first from its
    best-connected class, so every class after a part's first has a placed partner."""
    seen: set[int] = set()
    parts = []
    for root in sorted(adj, key=lambda c: (-len(adj[c]), c)):
        if root in seen:
            continue
        part, queue = [], deque([root])
        seen.add(root)
        while queue:
            v = queue.popleft()
            part.append(v)
            for u in sorted(adj[v], key=lambda c: (-len(adj[c]), c)):
                if u not in seen:
                    seen.add(u)
                    queue.append(u)
        parts.append(part)
    parts.sort(key=len, reverse=True)
    return parts


class PairSearch:
    """Sets for the paired classes: ``values`` (n, C) is each position's value to each class."""

    def __init__(self, values: np.ndarray, k: int, pairs: np.ndarray,
                 budget: int = BUDGET) -> None:
        self.V = np.asarray(values, dtype=np.float64)
        self.n, self.k = self.V.shape[0], int(k)
        self.adj = adjacency(pairs)
        self.parts = search_parts(self.adj)
        self.order = [v for part in self.parts for v in part]
        self.placed: dict[int, int] = {}
        self.used: set[int] = set()
        self.budget, self.spent = int(budget), 0

    def value(self, mask: int, c: int) -> float:
        return float(self.V[bits(mask), c].sum())

    def candidates(self, v: int) -> Iterator[int]:
        """Sets class ``v`` may take now, best first: one swap from every placed partner's
        set (any free set when none is placed), never a set another class holds."""
        partners = [self.placed[u] for u in self.adj[v] if u in self.placed]
        if not partners:
            yield from self._free_sets(v)
            return
        first = partners[0]
        inside = self.member(first)
        ins, outs = np.flatnonzero(inside), np.flatnonzero(~inside)
        col = self.V[:, v]
        gain = col[outs][None, :] - col[ins][:, None]  # (k, n-k): swap ins[a] for outs[b]
        fits = np.ones(gain.shape, dtype=bool)
        for other in partners[1:]:  # |T & S| after the swap, for every swap at once
            mem = self.member(other)
            shared = int(np.count_nonzero(inside & mem))
            fits &= shared - mem[ins][:, None] + mem[outs][None, :] == self.k - 1
        flat = np.flatnonzero(fits.ravel())
        for f in flat[np.argsort(-gain.ravel()[flat], kind="stable")].tolist():
            a, b = divmod(f, outs.size)
            mask = first ^ (1 << int(ins[a])) ^ (1 << int(outs[b]))
            if mask not in self.used:
                yield mask

    def member(self, mask: int) -> np.ndarray:
        """``mask`` as an (n,) bool array."""
        raw = np.frombuffer(mask.to_bytes(self.n // 8 + 1, "little"), dtype=np.uint8)
        return np.unpackbits(raw, bitorder="little")[: self.n].astype(bool)

    def _free_sets(self, v: int) -> Iterator[int]:
        order = np.argsort(-self.V[:, v], kind="stable")
        subsets = Subsets(self.V[order, v], self.k)
        m = 0
        while (item := subsets.get(m)) is not None:
            m += 1
            mask = sum(1 << int(order[p]) for p in item[0])
            if mask not in self.used:
                yield mask

    def run(self) -> bool:
        """Place every paired class; False when no way exists. Each part of the pair graph
        first as a sunflower (:meth:`sunflower`), else depth first with the parts before it
        fixed; if a part finds no room that way, one exhaustive search over all parts
        decides. Raises :class:`_Undecided` past the budget."""
        for part in self.parts:
            sets = self.sunflower(part)
            if sets is not None:
                for v, mask in sets.items():
                    self.placed[v] = mask
                    self.used.add(mask)
            elif not self.dfs(part):
                break
        else:
            return True
        self.placed.clear()
        self.used.clear()
        # Before anything is placed every set looks alike (up to renaming the features), so
        # the first class may keep its first set: the search stays complete.
        return self.dfs(self.order, first_only=True)

    def sunflower(self, part: list[int]) -> dict[int, int] | None:
        """One core of k-1 features shared by the whole part (the best for the part in sum),
        and one feature of its own per class (the best distinct ones): every two classes of
        the part then share exactly k-1. None when the part has more classes than features
        outside a core, or a set is taken."""
        k, n = self.k, self.n
        if len(part) > n - k + 1:
            return None
        core = np.argsort(-self.V[:, part].sum(axis=1), kind="stable")[: k - 1]
        rest = np.setdiff1d(np.arange(n), core)
        rows, cols = linear_sum_assignment(-self.V[np.ix_(rest, part)].T)
        base = sum(1 << int(i) for i in core)
        sets = {part[r]: base | (1 << int(rest[c])) for r, c in zip(rows, cols, strict=True)}
        return None if any(m in self.used for m in sets.values()) else sets

    def dfs(self, order: list[int], first_only: bool = False) -> bool:
        """Place the classes of ``order`` depth first, backtracking; on failure nothing of
        theirs stays placed. ``first_only``: the first class tries one set only."""
        placed, used = self.placed, self.used
        gens: list[Iterator[int] | None] = [None] * len(order)
        p = 0
        while 0 <= p < len(order):
            v = order[p]
            if v in placed:  # back here after a failure further on: try v's next set
                used.discard(placed.pop(v))
                if first_only and p == 0:
                    return False
            if gens[p] is None:
                gens[p] = self.candidates(v)
            mask = next(gens[p], None)
            self.spent += 1
            if self.spent > self.budget:
                for u in order:  # leave nothing of this search behind
                    if u in placed:
                        used.discard(placed.pop(u))
                raise _Undecided
            if mask is None:
                gens[p] = None
                p -= 1
                continue
            placed[v] = mask
            used.add(mask)
            p += 1
        return p == len(order)

    def ascend(self, passes: int = ASCENT_PASSES) -> None:
        """Move single classes to their best set that still fits their partners."""
        for _ in range(passes):
            moved = False
            for v in self.order:
                now = self.placed[v]
                self.used.discard(now)
                best = next(self.candidates(v), now)  # now itself is a candidate
                if self.value(best, v) > self.value(now, v) + 1e-12:
                    self.placed[v], moved = best, True
                self.used.add(self.placed[v])
            if not moved:
                return


def embeddable(pairs: np.ndarray, n_classes: int, n: int, k: int,
               budget: int = BUDGET) -> bool | None:
    """Whether the pair graph fits into distinct k-subsets of n features (None: undecided
    within ``budget``). The other classes always fit when C(n, k) >= C."""
    # Values do not matter here; seeded random ones give the parts different cores.
    values = np.random.default_rng(0).random((n, n_classes))
    search = PairSearch(values, k, pairs, budget)
    try:
        return search.run()
    except _Undecided:
        return None


def pair_assignment(A: np.ndarray, selected, k: int, pairs: np.ndarray,
                    budget: int = BUDGET, fast: bool = False) -> np.ndarray | None:
    """An (F, C) uint8 assignment from ``selected`` in which every class has k features, all
    classes differ and every forced pair shares exactly k−1; None if the search finds none.
    ``fast``: the other classes get the greedy repair instead of the exact matching (for
    scoring many trial selections)."""
    A = np.asarray(A)
    F, C = A.shape
    sel = np.unique(np.asarray(selected, dtype=np.int64))
    search = PairSearch(A[sel], k, pairs, budget)
    try:
        if not search.run():
            return None
    except _Undecided:
        return None
    search.ascend()
    w = np.zeros((F, C), dtype=np.uint8)
    taken = set()
    for c, mask in search.placed.items():
        feats = sel[bits(mask)]
        w[feats, c] = 1
        taken.add(tuple(feats.tolist()))
    free = np.array([c for c in range(C) if c not in search.placed], dtype=np.int64)
    if free.size:
        repair = greedy_unique_columns if fast else unique_columns
        w[:, free] = repair(A[:, free], sel, k, taken=frozenset(taken))
    return w


def shared_counts(matrix: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """How many features each pair's two classes share in an (F, C) 0/1 matrix."""
    W = np.asarray(matrix) != 0
    p = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    return (W[:, p[:, 0]] & W[:, p[:, 1]]).sum(axis=0).astype(np.int64)
