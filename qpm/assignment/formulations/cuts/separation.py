"""Top-k value cuts for the cut formulation (numpy only, vectorised over classes).

For a fixed selection ``s`` class ``c`` takes its ``k`` best selected features. Its value is
the totally unimodular LP ``max sum_i A_ic w_i s.t. sum_i w_i = k, 0 <= w_i <= s_i`` whose
dual gives, for every threshold ``lam``, the cut valid for EVERY selection::

    theta_c <= k * lam + sum_i max(A_ic - lam, 0) * s_i

The right-hand side is convex piecewise-linear in ``lam`` with breakpoints at the ``A_ic``,
so the most violated cut at a (fractional) ``s`` sits at the breakpoint where the greedy
fill ``w_i = s_i`` in descending ``A_ic`` reaches ``k``; :class:`TopK` finds it for all
classes at once from one precomputed argsort.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Fractional fills within this of k count as reaching k (LP solutions carry round-off).
_FILL_TOL = 1e-9


@dataclass
class CutBatch:
    """Cuts ``theta_c <= rhs + sum coef * s`` in coordinate form (one row per entry of cls)."""

    cls: np.ndarray  # (m,) class of each cut
    lam: np.ndarray  # (m,) the threshold it was built at
    rhs: np.ndarray  # (m,) k * lam
    rows: np.ndarray  # (nnz,) cut index 0..m-1 of each coefficient
    cols: np.ndarray  # (nnz,) feature index
    vals: np.ndarray  # (nnz,) max(A_ic - lam, 0) > 0

    def __len__(self) -> int:
        return int(self.cls.size)


class TopK:
    """Top-k values and cuts for one similarity matrix ``A`` (F, C) and ``k``."""

    def __init__(self, A: np.ndarray, k: int) -> None:
        self.A = np.asarray(A, dtype=np.float64)
        self.k = int(k)
        F, C = self.A.shape
        # Stable sort: ties are ordered by feature index, the same rule the decoder uses.
        self.order = np.argsort(-self.A, axis=0, kind="stable")  # (F, C)
        self.sorted = np.take_along_axis(self.A, self.order, axis=0)  # descending per column
        self._cols = np.arange(C)

    # -- values -------------------------------------------------------------------------
    def fill(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Greedy fill at ``s``: per class the LP value and the breakpoint threshold lam."""
        s = np.clip(np.asarray(s, dtype=np.float64), 0.0, 1.0)
        S = s[self.order]  # (F, C) selections in descending A order per class
        cum = np.cumsum(S, axis=0)
        reached = cum >= self.k - _FILL_TOL
        # Where a class cannot reach k (sum s < k) the last row is used: lam = the smallest A.
        idx = np.where(reached.any(axis=0), reached.argmax(axis=0), S.shape[0] - 1)
        lam = self.sorted[idx, self._cols]
        before = np.where(idx > 0, cum[np.maximum(idx - 1, 0), self._cols], 0.0)
        mask = np.arange(S.shape[0])[:, None] < idx[None, :]
        head = np.where(mask, self.sorted * S, 0.0).sum(axis=0)
        value = head + lam * np.maximum(self.k - before, 0.0)
        return value, lam

    def values(self, selected: np.ndarray) -> np.ndarray:
        """Exact top-k value of every class for a 0/1 selection (F,)."""
        value, _ = self.fill(np.asarray(selected, dtype=np.float64))
        return value

    def decode(self, selected: np.ndarray) -> np.ndarray:
        """The 0/1 matrix (F, C) giving each class its k best selected features.

        Ties in A are broken by the lower feature index (the stable argsort), so the
        decoding is deterministic; collisions between classes are handled by the caller.
        """
        sel = np.asarray(selected, dtype=bool)
        S = sel[self.order]
        rank = np.cumsum(S, axis=0)
        take = S & (rank <= self.k)
        W = np.zeros(self.A.shape, dtype=np.int8)
        np.put_along_axis(W, self.order, take.astype(np.int8), axis=0)
        return W

    # -- cuts ---------------------------------------------------------------------------
    def cuts(self, classes: np.ndarray, lam: np.ndarray) -> CutBatch:
        """The cuts of the given classes at thresholds ``lam`` (one cut per pair)."""
        classes = np.asarray(classes, dtype=np.int64)
        lam = np.asarray(lam, dtype=np.float64)
        if classes.size == 0:
            e = np.zeros(0, dtype=np.int64)
            return CutBatch(e, np.zeros(0), np.zeros(0), e, e.copy(), np.zeros(0))
        # Number of features strictly above lam in each class (descending sorted columns).
        cols_sorted = self.sorted[:, classes]  # (F, m)
        counts = (cols_sorted > lam[None, :]).sum(axis=0)
        rows = np.repeat(np.arange(classes.size), counts)
        starts = np.cumsum(counts) - counts
        pos = np.arange(rows.size) - np.repeat(starts, counts)
        feats = self.order[pos, classes[rows]]
        vals = self.sorted[pos, classes[rows]] - lam[rows]
        return CutBatch(classes, lam, self.k * lam, rows, feats, vals)

    def separate(
        self, s: np.ndarray, theta: np.ndarray, tol: float = 1e-7
    ) -> tuple[CutBatch, np.ndarray]:
        """Most violated cut of every class whose theta exceeds its value at ``s``.

        Returns the cuts and the per-class values at ``s``.
        """
        value, lam = self.fill(s)
        viol = np.flatnonzero(np.asarray(theta) > value + tol * np.maximum(1.0, np.abs(value)))
        return self.cuts(viol, lam[viol]), value

    def rank_cuts(self, ranks: np.ndarray, candidates: np.ndarray | None = None) -> CutBatch:
        """Seed cuts: for every class, lam = the r-th largest A among ``candidates`` (1-based)."""
        A = self.A if candidates is None else self.A[candidates]
        srt = -np.sort(-A, axis=0)
        ranks = np.asarray([r for r in ranks if 1 <= r <= srt.shape[0]], dtype=np.int64)
        C = self.A.shape[1]
        classes = np.tile(np.arange(C), ranks.size)
        lam = srt[np.repeat(ranks - 1, C), classes]
        return self.cuts(classes, lam)
