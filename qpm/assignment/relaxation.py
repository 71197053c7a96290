"""The growing relaxation behind the cut formulation, kept as arrays (no Pyomo objects).

Columns: ``s`` (F, binary in the MIP), ``theta`` (C, the unscaled top-k value of each class),
then lazily ``y`` (one per modelled redundancy pair), ``z`` (one per aggregated "star" of
pairs), ``w`` (F per class that needs explicit assignment variables for uniqueness).
Rows are appended in blocks; every backend :class:`~qpm.assignment.backends.base.Session`
catches up with :meth:`Relaxation.sync`, so the LP, the MIP and every backend see exactly
the same matrix (the cut formulation's "one model" for gurobi, scip and highs alike).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from qpm.assignment.compile import MatrixForm
from qpm.assignment.separation import CutBatch


@dataclass
class _Cursor:
    cols: int = 0
    rows: int = 0


@dataclass
class Relaxation:
    """Column data and row blocks; ``s`` are columns 0..F-1, ``theta`` F..F+C-1."""

    F: int
    C: int
    lo: list = field(default_factory=list)
    hi: list = field(default_factory=list)
    integer: list = field(default_factory=list)
    cost: list = field(default_factory=list)
    # row blocks: (indptr, indices, values, lo, hi)
    blocks: list = field(default_factory=list)
    n_cols: int = 0
    n_rows: int = 0
    # per row block: may the row be left out of a model (cuts that only tighten the bound)?
    optional: list = field(default_factory=list)

    # -- building -------------------------------------------------------------------------
    def add_cols(self, lo, hi, integer, cost) -> int:
        """Append columns; returns the index of the first one."""
        lo = np.asarray(lo, dtype=np.float64)
        n = lo.size
        self.lo.append(lo)
        self.hi.append(np.broadcast_to(np.asarray(hi, dtype=np.float64), (n,)).copy())
        self.integer.append(np.broadcast_to(np.asarray(integer, dtype=bool), (n,)).copy())
        self.cost.append(np.broadcast_to(np.asarray(cost, dtype=np.float64), (n,)).copy())
        first = self.n_cols
        self.n_cols += n
        return first

    def add_rows(self, indptr, indices, values, lo, hi, optional: bool = False) -> None:
        """Append rows ``lo <= sum values * x[indices] <= hi`` in CSR pieces.

        ``optional`` rows (top-k cuts, cliques) only tighten the relaxation; every row that
        makes a 0/1 point priced exactly (pairs, stars, assignments) is not optional.
        """
        lo = np.asarray(lo, dtype=np.float64)
        if lo.size == 0:
            return
        self.optional.append(np.full(lo.size, bool(optional)))
        hi = np.broadcast_to(np.asarray(hi, dtype=np.float64), lo.shape).copy()
        self.blocks.append(
            (np.asarray(indptr, dtype=np.int64), np.asarray(indices, dtype=np.int64),
             np.asarray(values, dtype=np.float64), lo, hi)
        )
        self.n_rows += lo.size

    def add_fixed_width(self, idx: np.ndarray, val: np.ndarray, lo, hi) -> None:
        """Rows with the same number of entries each: ``idx`` and ``val`` are (m, width)."""
        m, width = idx.shape
        self.add_rows(np.arange(m + 1) * width, idx.ravel(), val.ravel(),
                      np.broadcast_to(np.asarray(lo, dtype=np.float64), (m,)), hi)

    def add_cuts(self, cb: CutBatch) -> None:
        """``theta_c - sum_i coef_i s_i <= k * lam`` for every cut of the batch."""
        m = len(cb)
        if m == 0:
            return
        order = np.argsort(cb.rows, kind="stable")
        cnt = np.bincount(cb.rows, minlength=m)
        indptr = np.concatenate([[0], np.cumsum(cnt + 1)])
        idx = np.empty(cb.rows.size + m, dtype=np.int64)
        val = np.empty(cb.rows.size + m)
        heads = indptr[:-1]
        idx[heads] = self.F + cb.cls
        val[heads] = 1.0
        within = np.arange(cb.rows.size) - np.repeat(np.cumsum(cnt) - cnt, cnt)
        pos = within + np.repeat(heads, cnt) + 1
        idx[pos] = cb.cols[order]
        val[pos] = -cb.vals[order]
        # Top-k cuts stay in every model: without them MIP answers overrate theta and
        # the loop needs extra rounds (medium: 5 instead of 1).
        self.add_rows(indptr, idx, val, np.full(m, -math.inf), cb.rhs)

    # -- handing over -----------------------------------------------------------------------
    def _cols(self, start: int) -> tuple[np.ndarray, ...]:
        arrays = [np.concatenate(x) if x else np.zeros(0) for x in
                  (self.lo, self.hi, self.integer, self.cost)]
        return tuple(a[start:] for a in arrays)

    def _rows(self, start: int) -> tuple[sp.csr_array, np.ndarray, np.ndarray]:
        """Rows from ``start`` on as one CSR matrix spanning all current columns."""
        ptrs, idxs, vals, los, his = [], [], [], [], []
        seen, offset = 0, 0
        for indptr, idx, val, lo, hi in self.blocks:
            m = lo.size
            if seen + m > start:
                skip = max(0, start - seen)
                a, b = indptr[skip], indptr[-1]
                ptrs.append(indptr[skip + 1:] - a + offset)
                idxs.append(idx[a:b])
                vals.append(val[a:b])
                los.append(lo[skip:])
                his.append(hi[skip:])
                offset += b - a
            seen += m
        if not los:
            return sp.csr_array((0, self.n_cols)), np.zeros(0), np.zeros(0)
        indptr = np.concatenate([[0]] + ptrs)
        A = sp.csr_array((np.concatenate(vals), np.concatenate(idxs), indptr),
                         shape=(indptr.size - 1, self.n_cols))
        return A, np.concatenate(los), np.concatenate(his)

    def tight_rows(self, x: np.ndarray, tol: float = 1e-6) -> np.ndarray:
        """Rows to keep at point ``x``: every required row, and optional ones within tol."""
        A, rlo, rhi = self._rows(0)
        xx = np.zeros(self.n_cols)
        xx[: x.size] = x[: self.n_cols]
        ax = A @ xx
        tight = (ax >= rhi - tol * np.maximum(1.0, np.abs(rhi))) | np.isfinite(rlo)
        return ~np.concatenate(self.optional) | tight

    def form(self, integral: bool, keep: np.ndarray | None = None) -> MatrixForm:
        """The relaxation as a maximisation; ``integral`` False relaxes integrality and
        ``keep`` (a row mask) leaves rows out."""
        lo, hi, integer, cost = self._cols(0)
        A, rlo, rhi = self._rows(0)
        if keep is not None:
            A, rlo, rhi = A[np.flatnonzero(keep)], rlo[keep], rhi[keep]
        return MatrixForm(
            c=cost, c0=0.0, maximize=True, A=A, row_lo=rlo, row_hi=rhi, col_lo=lo, col_hi=hi,
            integer=integer.astype(bool) if integral else np.zeros(lo.size, dtype=bool),
            columns=[], start=np.full(lo.size, np.nan),
        )

    def cursor(self) -> _Cursor:
        return _Cursor(self.n_cols, self.n_rows)

    def sync(self, session, cursor: _Cursor, integral: bool) -> None:
        """Hand ``session`` the columns and rows added since ``cursor`` (updated in place)."""
        if self.n_cols > cursor.cols:
            lo, hi, integer, cost = self._cols(cursor.cols)
            session.add_columns(lo, hi, integer.astype(bool) & integral, cost)
            cursor.cols = self.n_cols
        if self.n_rows > cursor.rows:
            A, rlo, rhi = self._rows(cursor.rows)
            session.add_rows(A, rlo, rhi)
            cursor.rows = self.n_rows
