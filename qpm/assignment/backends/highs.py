"""HiGHS through highspy: the matrix form goes in as one ``HighsLp`` (column-wise arrays)."""

from __future__ import annotations

import math
import os
import sys
import time

import numpy as np
import scipy.sparse as sp

from qpm.assignment.backends.base import (
    Backend,
    BackendOutcome,
    Session,
    classify,
    proven_bound,
    watchdog,
)
from qpm.assignment.formulations.compile import MatrixForm


def new_highs():
    """A silent ``Highs`` instance (the licence banner goes to fd 1 at the first one)."""
    import highspy

    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            h = highspy.Highs()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
    h.setOptionValue("output_flag", False)
    return h


# HiGHS runs every instance on ONE process-wide thread pool, sized by the first run. A later
# run asking for another size fails with model status "Not Set", so resize the pool first.
_pool_threads: int | None = None


def _use_threads(hs, h, threads: int | None) -> None:
    global _pool_threads
    wanted = int(threads) if threads else 0  # 0: HiGHS's own choice
    if _pool_threads is not None and wanted != _pool_threads:
        hs.Highs.resetGlobalScheduler(True)
    _pool_threads = wanted
    h.setOptionValue("threads", wanted)


def _inf(x: np.ndarray, hs) -> np.ndarray:
    # HiGHS encodes infinity as kHighsInf (1e30 would also do; be exact).
    return np.clip(np.asarray(x, dtype=np.float64), -hs.kHighsInf, hs.kHighsInf)


class HighsSession(Session):
    def __init__(self, form: MatrixForm) -> None:
        import highspy as hs

        self._hs = hs
        t0 = time.perf_counter()
        h = new_highs()
        lp = hs.HighsLp()
        lp.num_col_ = form.n_cols
        lp.num_row_ = form.n_rows
        lp.col_cost_ = np.asarray(form.c, dtype=np.float64)
        lp.col_lower_ = _inf(form.col_lo, hs)
        lp.col_upper_ = _inf(form.col_hi, hs)
        lp.row_lower_ = _inf(form.row_lo, hs)
        lp.row_upper_ = _inf(form.row_hi, hs)
        lp.offset_ = float(form.c0)
        lp.sense_ = hs.ObjSense.kMaximize if form.maximize else hs.ObjSense.kMinimize
        A = sp.csc_array(form.A)
        lp.a_matrix_.format_ = hs.MatrixFormat.kColwise
        lp.a_matrix_.num_col_ = form.n_cols
        lp.a_matrix_.num_row_ = form.n_rows
        lp.a_matrix_.start_ = A.indptr.astype(np.int32)
        lp.a_matrix_.index_ = A.indices.astype(np.int32)
        lp.a_matrix_.value_ = A.data.astype(np.float64)
        lp.integrality_ = [
            hs.HighsVarType.kInteger if f else hs.HighsVarType.kContinuous for f in form.integer
        ]
        status = h.passModel(lp)
        if status == hs.HighsStatus.kError:
            raise RuntimeError("HiGHS rejected the model")
        self._h = h
        self._n = form.n_cols
        self.handoff_seconds = time.perf_counter() - t0

    @property
    def n_cols(self) -> int:
        return self._n

    def _callbacks(self, follow: bool) -> None:
        """One callback for the whole run: it stops HiGHS once the watchdog asks (through the
        interrupt callbacks) and, when ``follow``, reports bounds and improving solutions.
        Setting it anew also clears an interrupt HiGHS would otherwise keep for later runs."""
        kinds = self._hs.cb.HighsCallbackType
        stop = (kinds.kCallbackSimplexInterrupt, kinds.kCallbackIpmInterrupt,
                kinds.kCallbackMipInterrupt)
        improving = kinds.kCallbackMipImprovingSolution

        def callback(kind, _message, out, inp, _user) -> None:
            if self._stop and kind in stop:
                inp.user_interrupt = True
            if follow and kind in (kinds.kCallbackMipInterrupt, improving):
                self.report_bound(out.mip_dual_bound)
                if kind == improving:
                    self.report_solution(out.mip_solution, out.mip_primal_bound)

        self._h.setCallback(None, None)
        self._h.setCallback(callback, None)
        for kind in (*stop, improving) if follow else stop:
            self._h.startCallback(kind)

    def _interrupt(self) -> None:
        self._stop = True

    def _set_limit(self, time_limit: float | None) -> None:
        # HiGHS 1.16 compares time_limit with the time of the current run (getRunTime() sums
        # all runs: adding it made every re-solve of a session run twice as long as the last).
        self._h.setOptionValue("time_limit", float(time_limit) if time_limit else math.inf)

    def add_columns(self, lo, hi, integer, c=None) -> None:
        t0 = time.perf_counter()
        hs, n = self._hs, len(lo)
        c = np.zeros(n) if c is None else np.asarray(c, dtype=np.float64)
        empty = np.zeros(0, dtype=np.int32)
        self._h.addCols(n, c, _inf(lo, hs), _inf(hi, hs), 0, empty, empty, np.zeros(0))
        ints = np.flatnonzero(integer).astype(np.int32)
        if ints.size:
            self._h.changeColsIntegrality(
                ints.size, ints + self._n, np.ones(ints.size, dtype=np.uint8)
            )
        self._n += n
        self.handoff_seconds += time.perf_counter() - t0

    def add_rows(self, A, lo, hi) -> None:
        t0 = time.perf_counter()
        A = sp.csr_array(A)
        self._h.addRows(
            A.shape[0],
            _inf(lo, self._hs),
            _inf(hi, self._hs),
            A.nnz,
            A.indptr[:-1].astype(np.int32),
            A.indices.astype(np.int32),
            A.data.astype(np.float64),
        )
        self.handoff_seconds += time.perf_counter() - t0

    def delete_rows(self, rows) -> bool:
        rows = np.asarray(rows, dtype=np.int32)
        if rows.size:
            self._h.deleteRows(rows.size, rows)
        return True

    def solve(self, time_limit=None, mip_gap=1e-4, threads=None, start=None) -> BackendOutcome:
        hs, h = self._hs, self._h
        self._set_limit(time_limit)
        h.setOptionValue("mip_rel_gap", float(mip_gap))
        _use_threads(hs, h, threads)
        if start is not None:
            start = np.asarray(start, dtype=np.float64)
            known = np.flatnonzero(np.isfinite(start)).astype(np.int32)
            if known.size:
                h.setSolution(known.size, known, start[known])
        t0 = time.perf_counter()
        self._stop = False  # set by the watchdog
        self._callbacks(self.following)
        with watchdog(time_limit, self._interrupt):
            h.run()
        seconds = time.perf_counter() - t0
        ms = h.getModelStatus()
        info = h.getInfo()
        S = hs.HighsModelStatus
        status = classify(ms, (S.kOptimal,),
                          (S.kTimeLimit, S.kInterrupt, S.kIterationLimit, S.kSolutionLimit),
                          (S.kInfeasible, S.kUnboundedOrInfeasible))
        has_x = info.primal_solution_status == 2  # kSolutionStatusFeasible
        x = np.asarray(h.getSolution().col_value, dtype=np.float64) if has_x else None
        bound = proven_bound(status, info.mip_dual_bound)
        return BackendOutcome(
            status=status,
            x=x,
            objective=float(info.objective_function_value) if has_x else None,
            bound=bound,
            handoff_seconds=self.handoff_seconds,
            solve_seconds=seconds,
            message="" if status != "error" else h.modelStatusToString(ms),
        )


class HighsBackend(Backend):
    name = "highs"

    def available(self) -> tuple[bool, str]:
        try:
            import highspy  # noqa: F401
        except ImportError:
            return False, "highspy is not installed; pip install highspy."
        return True, ""

    def version(self) -> str:
        h = new_highs()
        return f"{h.versionMajor()}.{h.versionMinor()}.{h.versionPatch()}"

    def load(self, form: MatrixForm) -> HighsSession:
        return HighsSession(form)
