"""HiGHS through highspy: the matrix form goes in as one ``HighsLp`` (column-wise arrays)."""

from __future__ import annotations

import math
import time

import numpy as np
import scipy.sparse as sp

from qpm.assignment.backends.base import (
    Backend,
    MatrixForm,
    Outcome,
    Session,
    installed,
    proven_bound,
)
from qpm.assignment.status import Availability, Termination


def new_highs():
    """A silent ``Highs`` instance: its banner goes to file descriptor 1 at construction,
    before any option can silence it. Pyomo's ``capture_output(capture_fd=True)`` swallows it
    (3.1 ms per instance against 0.1 ms for a bare ``os.dup2`` swap, measured; a solve makes
    two or three instances, and the 90 ms import is paid once)."""
    import highspy
    from pyomo.common.tee import capture_output

    with capture_output(capture_fd=True):
        h = highspy.Highs()
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
        self._integer = bool(np.any(form.integer))  # HiGHS then runs its MIP solver

    @property
    def n_cols(self) -> int:
        return self._n

    def _callbacks(self, follow: bool) -> None:
        """One callback for the whole run: it stops HiGHS once the watchdog asks (through the
        interrupt callbacks: on a time-out, a signal or a failed callback) and, when
        ``follow``, reports bounds and improving solutions.
        Setting it anew also clears an interrupt HiGHS would otherwise keep for later runs."""
        kinds = self._hs.cb.HighsCallbackType
        stop = (kinds.kCallbackSimplexInterrupt, kinds.kCallbackIpmInterrupt,
                kinds.kCallbackMipInterrupt)
        improving = kinds.kCallbackMipImprovingSolution

        def callback(kind, _message, out, inp, _user) -> None:
            try:
                if follow and kind in (kinds.kCallbackMipInterrupt, improving):
                    self.report_bound(out.mip_dual_bound)
                    if kind == improving:
                        self.report_solution(out.mip_solution, out.mip_primal_bound)
            except BaseException as exc:  # noqa: BLE001 - highspy would make it "error"
                self.callback_failed(exc)
            if self._stopping and kind in stop:
                inp.user_interrupt = True

        self._h.setCallback(None, None)
        self._h.setCallback(callback, None)
        for kind in (*stop, improving) if follow else stop:
            self._h.startCallback(kind)

    def _interrupt(self) -> None:
        self._stopping = True  # read by the callback at HiGHS's next interrupt check

    def _set_limit(self, time_limit: float | None) -> None:
        # HiGHS 1.16 has two clocks: its MIP solver compares time_limit with the current
        # run, but the LP solvers compare it with getRunTime(), the sum of ALL runs of this
        # object; without adding that, the root LP loop's re-solves stopped "time_limit"
        # once their summed solve time passed the time left (ImageNet size: after 300 s of
        # 600); tests/test_backends.py checks the LP case.
        if not time_limit:
            self._h.setOptionValue("time_limit", math.inf)
            return
        past = 0.0 if self._integer else float(self._h.getRunTime())
        self._h.setOptionValue("time_limit", past + float(time_limit))

    def add_columns(self, lo, hi, integer, c=None) -> None:
        hs, n = self._hs, len(lo)
        c = np.zeros(n) if c is None else np.asarray(c, dtype=np.float64)
        empty = np.zeros(0, dtype=np.int32)
        self._h.addCols(n, c, _inf(lo, hs), _inf(hi, hs), 0, empty, empty, np.zeros(0))
        ints = np.flatnonzero(integer).astype(np.int32)
        if ints.size:
            self._integer = True
            self._h.changeColsIntegrality(
                ints.size, ints + self._n, np.ones(ints.size, dtype=np.uint8)
            )
        self._n += n

    def add_rows(self, A, lo, hi) -> None:
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

    def delete_rows(self, rows) -> bool:
        rows = np.asarray(rows, dtype=np.int32)
        if rows.size:
            self._h.deleteRows(rows.size, rows)
        return True

    def solve(self, time_limit=None, mip_gap=1e-4, threads=None, start=None) -> Outcome:
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
        self._stopping = False  # set by the watchdog
        self._callbacks(self.following)
        with self.running(time_limit, self._interrupt, "highs" if self._integer else None
                          ) as stopped:
            h.run()
        seconds = time.perf_counter() - t0
        ms = h.getModelStatus()
        info = h.getInfo()
        termination = _termination(hs).get(ms, Termination.ERROR)
        stopped.settle(termination is Termination.INTERRUPTED)
        has_x = info.primal_solution_status == 2  # kSolutionStatusFeasible
        x = np.asarray(h.getSolution().col_value, dtype=np.float64) if has_x else None
        return Outcome(
            termination=termination,
            x=x,
            objective=float(info.objective_function_value) if has_x else None,
            bound=proven_bound(termination, info.mip_dual_bound),
            solve_seconds=seconds,
            message=h.modelStatusToString(ms) if termination is Termination.ERROR else "",
        )


def _termination(hs) -> dict:
    S = hs.HighsModelStatus
    return {S.kOptimal: Termination.OPTIMAL, S.kTimeLimit: Termination.TIME_LIMIT,
            S.kInterrupt: Termination.INTERRUPTED, S.kIterationLimit: Termination.OTHER_LIMIT,
            S.kSolutionLimit: Termination.OTHER_LIMIT, S.kInfeasible: Termination.INFEASIBLE,
            S.kUnboundedOrInfeasible: Termination.INFEASIBLE}


class HighsBackend(Backend):
    name = "highs"

    def available(self) -> tuple[Availability, str]:
        return installed("highspy")

    def version(self) -> str:
        h = new_highs()
        return f"{h.versionMajor()}.{h.versionMinor()}.{h.versionPatch()}"

    def load(self, form: MatrixForm) -> HighsSession:
        return HighsSession(form)
