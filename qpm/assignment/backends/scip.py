"""SCIP through pyscipopt, called directly.

Pyomo's own SCIP routes need an executable or hand a long objective over in time quadratic
in its length, so the matrix form is loaded here row by row with prebuilt term dictionaries
(one ``Expr`` per row, all rows in one ``addConss``): linear in the model size.
"""

from __future__ import annotations

import math
import time

import numpy as np
import scipy.sparse as sp

from qpm.assignment.backends.base import Backend, BackendOutcome, Session
from qpm.assignment.compile import MatrixForm


def _bound(x: float) -> float | None:
    return None if not math.isfinite(x) else float(x)


class ScipSession(Session):
    def __init__(self, form: MatrixForm) -> None:
        import pyscipopt

        t0 = time.perf_counter()
        m = pyscipopt.Model()
        m.hideOutput()
        self._m = m
        self._vars: list = []
        self.add_columns(form.col_lo, form.col_hi, form.integer, form.c)
        if form.c0:
            m.addObjoffset(float(form.c0))
        if form.maximize:
            m.setMaximize()
        else:
            m.setMinimize()
        self.add_rows(form.A, form.row_lo, form.row_hi)
        self.handoff_seconds = time.perf_counter() - t0

    @property
    def n_cols(self) -> int:
        return len(self._vars)

    def _editable(self) -> None:
        # Changes need the original problem stage; solutions are passed again as starts.
        if self._m.getStage() > 1:  # SCIP_STAGE_PROBLEM
            self._m.freeTransform()

    def add_columns(self, lo, hi, integer, c=None) -> None:
        t0 = time.perf_counter()
        self._editable()
        m, n = self._m, len(lo)
        c = np.zeros(n) if c is None else np.asarray(c, dtype=np.float64)
        base = len(self._vars)
        rows = zip(
            np.asarray(lo).tolist(), np.asarray(hi).tolist(), np.asarray(integer).tolist(),
            c.tolist(), strict=True,
        )
        for j, (a, b, isint, cost) in enumerate(rows):
            vtype = "C"
            if isint:
                vtype = "B" if a >= 0 and b <= 1 else "I"
            self._vars.append(
                m.addVar(name=f"x{base + j}", vtype=vtype, lb=_bound(a), ub=_bound(b), obj=cost)
            )
        self.handoff_seconds += time.perf_counter() - t0

    def add_rows(self, A, lo, hi) -> None:
        from pyscipopt.scip import Expr, ExprCons, Term

        t0 = time.perf_counter()
        self._editable()
        A = sp.csr_array(A)
        A.sum_duplicates()
        terms = [Term(v) for v in self._vars]
        ptr, idx, val = A.indptr.tolist(), A.indices.tolist(), A.data.tolist()
        lo, hi = np.asarray(lo).tolist(), np.asarray(hi).tolist()
        conss = []
        for r in range(A.shape[0]):
            a, b = ptr[r], ptr[r + 1]
            expr = Expr({terms[j]: v for j, v in zip(idx[a:b], val[a:b], strict=True)})
            conss.append(ExprCons(expr, lhs=_bound(lo[r]), rhs=_bound(hi[r])))
        if conss:
            self._m.addConss(conss)
        self.handoff_seconds += time.perf_counter() - t0

    def solve(self, time_limit=None, mip_gap=1e-4, threads=None, start=None) -> BackendOutcome:
        m = self._m
        self._editable()
        m.setParam("limits/time", float(time_limit) if time_limit else 1e20)
        m.setParam("limits/gap", float(mip_gap))
        if threads:
            m.setParam("lp/threads", int(threads))
        if start is not None:
            start = np.asarray(start, dtype=np.float64)
            known = np.isfinite(start)
            sol = m.createSol() if known.all() else m.createPartialSol()
            for v, value, ok in zip(self._vars, start.tolist(), known.tolist(), strict=True):
                if ok:
                    m.setSolVal(sol, v, value)
            m.addSol(sol, free=True)  # a partial one is completed by SCIP
        t0 = time.perf_counter()
        m.optimize()
        seconds = time.perf_counter() - t0
        raw = m.getStatus()
        if raw in ("optimal", "gaplimit"):
            status = "optimal"
        elif raw in ("timelimit", "userinterrupt", "nodelimit", "totalnodelimit", "stallnodelimit",
                     "memlimit", "sollimit", "bestsollimit", "restartlimit"):
            status = "time_limit"
        elif raw in ("infeasible", "inforunbd"):
            status = "infeasible"
        else:
            status = "error"
        x = objective = None
        if m.getNSols() > 0 and status != "infeasible":
            best = m.getBestSol()
            x = np.array([m.getSolVal(best, v) for v in self._vars], dtype=np.float64)
            objective = float(m.getSolObjVal(best))
        bound = float(m.getDualbound()) if status in ("optimal", "time_limit") else None
        if bound is not None and not (math.isfinite(bound) and abs(bound) < 1e19):
            bound = None
        return BackendOutcome(
            status=status,
            x=x,
            objective=objective,
            bound=bound,
            handoff_seconds=self.handoff_seconds,
            solve_seconds=seconds,
            message="" if status != "error" else f"SCIP status {raw}",
        )


class ScipBackend(Backend):
    name = "scip"

    def available(self) -> tuple[bool, str]:
        try:
            import pyscipopt  # noqa: F401
        except ImportError:
            return False, "pyscipopt is not installed; pip install pyscipopt."
        return True, ""

    def version(self) -> str:
        import pyscipopt

        return f"{pyscipopt.Model().version()} (pyscipopt {pyscipopt.__version__})"

    def load(self, form: MatrixForm) -> ScipSession:
        return ScipSession(form)
