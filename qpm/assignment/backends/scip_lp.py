"""Pure LPs on SCIP through its LP interface (SoPlex), which keeps the basis between solves.

The cut formulation's root loop re-solves one LP hundreds of times, a few rows larger each
time. A full SCIP model has to drop its transformed problem (and with it the LP basis) before
every change, so each round would start from scratch; SCIP's LP interface adds rows to the
solved LP and re-solves with the dual simplex from the last basis, as HiGHS and Gurobi do.
:class:`~qpm.assignment.backends.scip.ScipBackend` hands every form without integer columns
to this session.
"""

from __future__ import annotations

import time

import numpy as np
import scipy.sparse as sp

from qpm.assignment.backends.base import MatrixForm, Outcome, Session
from qpm.assignment.status import Termination


class ScipLPSession(Session):
    """An LP held by SCIP's LP interface; grows by continuous columns and by rows."""

    def __init__(self, form: MatrixForm) -> None:
        from pyscipopt import LP

        self._lp = LP("qpm", sense="maximize" if form.maximize else "minimize")
        self._inf = self._lp.infinity()
        self._n = 0
        self._c0 = float(form.c0)
        self.add_columns(form.col_lo, form.col_hi, form.integer, form.c)
        self.add_rows(form.A, form.row_lo, form.row_hi)

    @property
    def n_cols(self) -> int:
        return self._n

    def _finite(self, values) -> list[float]:
        return np.clip(np.asarray(values, dtype=np.float64), -self._inf, self._inf).tolist()

    def add_columns(self, lo, hi, integer, c=None) -> None:
        if np.any(integer):
            raise ValueError("SCIP's LP interface holds continuous columns only")
        n = len(lo)
        if n:
            obj = np.zeros(n) if c is None else np.asarray(c, dtype=np.float64)
            self._lp.addCols([[] for _ in range(n)], objs=obj.tolist(), lbs=self._finite(lo),
                             ubs=self._finite(hi))
            self._n += n

    def add_rows(self, A, lo, hi) -> None:
        A = sp.csr_array(A)
        if A.shape[0]:
            ptr, idx, val = A.indptr.tolist(), A.indices.tolist(), A.data.tolist()
            entries = [list(zip(idx[ptr[r]:ptr[r + 1]], val[ptr[r]:ptr[r + 1]], strict=True))
                       for r in range(A.shape[0])]
            self._lp.addRows(entries, lhss=self._finite(lo), rhss=self._finite(hi))

    def delete_rows(self, rows) -> bool:
        rows = np.asarray(rows, dtype=np.int64)
        # SoPlex deletes contiguous ranges: remove runs from the last one down.
        if rows.size:
            breaks = np.flatnonzero(np.diff(rows) != 1)
            starts = np.concatenate([[0], breaks + 1])
            ends = np.concatenate([breaks, [rows.size - 1]])
            for a, b in zip(starts[::-1].tolist(), ends[::-1].tolist(), strict=True):
                self._lp.delRows(int(rows[a]), int(rows[b]))
        return True

    def solve(self, time_limit=None, mip_gap=1e-4, threads=None, start=None) -> Outcome:
        from pyscipopt import SCIP_LPPARAM

        # SoPlex is single-threaded and starts from its own basis: threads and start unused.
        self._lp.setRealParam(SCIP_LPPARAM.LPTILIM, float(time_limit) if time_limit else 1e20)
        t0 = time.perf_counter()
        self._lp.solve(dual=True)
        seconds = time.perf_counter() - t0
        if self._lp.isOptimal():
            return Outcome(Termination.OPTIMAL,
                           x=np.asarray(self._lp.getPrimal(), dtype=np.float64),
                           objective=float(self._lp.getObjVal()) + self._c0,
                           solve_seconds=seconds)
        if time_limit is not None and seconds >= 0.95 * float(time_limit):
            return Outcome(Termination.TIME_LIMIT, solve_seconds=seconds)
        return Outcome(Termination.ERROR, solve_seconds=seconds,
                       message="SCIP LP not solved to optimality")

    def close(self) -> None:
        self._lp = None
