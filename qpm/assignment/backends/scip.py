"""SCIP through pyscipopt, called directly.

Pyomo's own SCIP routes need an executable or hand a long objective over in time quadratic
in its length. Here a large model goes through SCIP's C reader as a free-format MPS file
written in one pass from the sparse matrix; small models and every later addition
(``add_rows`` / ``add_columns``) go in row by row with prebuilt term dictionaries (one
``Expr`` per row, all rows in one ``addConss``). Both are linear in the model size; at
1.0M variables and rows (``benchmarks/handoff.py --size cub``) the file route takes 6-10 s on
a loaded 2-core machine. Pyomo's ``scip_persistent`` had not loaded that model after 600 s.
"""

from __future__ import annotations

import math
import os
import tempfile
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

# SCIP's status words, by what they mean here (anything else is an error).
_TERMINATION = {
    "optimal": Termination.OPTIMAL, "gaplimit": Termination.OPTIMAL,
    "timelimit": Termination.TIME_LIMIT, "userinterrupt": Termination.INTERRUPTED,
    **dict.fromkeys(("nodelimit", "totalnodelimit", "stallnodelimit", "memlimit", "sollimit",
                     "bestsollimit", "restartlimit"), Termination.OTHER_LIMIT),
    "infeasible": Termination.INFEASIBLE, "inforunbd": Termination.INFEASIBLE,
}


def _bound(x: float) -> float | None:
    return None if not math.isfinite(x) else float(x)


def _write_mps(path: str, form: MatrixForm) -> None:
    """Free-format MPS of a model with binary and continuous columns (column j is x<j>)."""
    n = form.n_cols
    lo, hi = form.row_lo, form.row_hi
    keep = np.isfinite(lo) | np.isfinite(hi)  # free rows constrain nothing
    rows = np.flatnonzero(keep)
    kind = np.where(lo == hi, "E", np.where(np.isfinite(hi), "L", "G"))
    # The objective row first, dense, so that every column appears in COLUMNS.
    full = sp.vstack([sp.csr_array(form.c.reshape(1, -1)), sp.csr_array(form.A)[rows]])
    full = sp.csc_array(full)
    full.sort_indices()
    names = ["obj"] + [f"r{i}" for i in rows.tolist()]
    col_of_entry = np.repeat(np.arange(n), np.diff(full.indptr)).tolist()
    out = ["NAME qpm", "ROWS", " N obj"]
    out += [f" {kind[i]} r{i}" for i in rows.tolist()]
    out.append("COLUMNS")
    out += [
        f" x{j} {names[i]} {v!r}"
        for j, i, v in zip(col_of_entry, full.indices.tolist(), full.data.tolist(), strict=True)
    ]
    out.append("RHS")
    rhs = np.where(kind == "G", lo, hi)[rows]
    out += [f" rhs r{i} {v!r}" for i, v in zip(rows.tolist(), rhs.tolist(), strict=True) if v]
    ranged = rows[np.isfinite(lo[rows]) & np.isfinite(hi[rows]) & (lo[rows] != hi[rows])]
    if ranged.size:
        out.append("RANGES")
        width = (hi[ranged] - lo[ranged]).tolist()
        out += [f" rng r{i} {v!r}" for i, v in zip(ranged.tolist(), width, strict=True)]
    out.append("BOUNDS")
    clo, chi = form.col_lo.tolist(), form.col_hi.tolist()
    for j, isint in enumerate(form.integer.tolist()):
        a, b = clo[j], chi[j]
        if isint:
            out.append(f" BV bnd x{j}" if (a, b) == (0.0, 1.0) else f" LI bnd x{j} {a!r}")
            if (a, b) != (0.0, 1.0):
                out.append(f" UI bnd x{j} {b!r}")
        elif a == b:
            out.append(f" FX bnd x{j} {a!r}")
        else:
            if a == -math.inf:
                out.append(f" MI bnd x{j}" if b < math.inf else f" FR bnd x{j}")
            elif a != 0.0:
                out.append(f" LO bnd x{j} {a!r}")
            if b < math.inf:
                out.append(f" UP bnd x{j} {b!r}")
    out.append("ENDATA\n")
    with open(path, "w") as fh:
        fh.write("\n".join(out))


def _read_via_mps(model, form: MatrixForm) -> None:
    """Load a large model through SCIP's own (C) MPS reader: far faster than row by row."""
    with tempfile.TemporaryDirectory(prefix="qpm-scip-") as tmp:
        path = os.path.join(tmp, "model.mps")
        _write_mps(path, form)
        model.readProblem(path)
    n_rows = int(np.count_nonzero(np.isfinite(form.row_lo) | np.isfinite(form.row_hi)))
    if model.getNVars() != form.n_cols or model.getNConss() != n_rows:
        raise RuntimeError(
            f"SCIP read {model.getNVars()} variables and {model.getNConss()} constraints "
            f"from the MPS hand-off, expected {form.n_cols} and {n_rows}"
        )


class ScipSession(Session):
    #: models with at least this many nonzeros are loaded through an MPS file
    FILE_THRESHOLD = 100_000

    def __init__(self, form: MatrixForm) -> None:
        import pyscipopt

        m = pyscipopt.Model()
        m.hideOutput()
        # SCIP's own Ctrl-C handler would end the solve as "userinterrupt" (a status, and a
        # line on stdout); the watchdog stops it instead and raises the signal again.
        m.setParam("misc/catchctrlc", False)
        self._m = m
        # None until needed: pyscipopt's first getVars() costs ~20 us per variable, so a
        # model read from a file exchanges starts and solutions through files as well.
        self._vars: list | None = []
        self._n = 0
        general_ints = np.any(form.integer & ((form.col_lo < 0) | (form.col_hi > 1)))
        if form.A.nnz >= self.FILE_THRESHOLD and not general_ints:
            _read_via_mps(m, form)
            self._vars, self._n = None, form.n_cols
        else:
            self.add_columns(form.col_lo, form.col_hi, form.integer, form.c)
            self.add_rows(form.A, form.row_lo, form.row_hi)
        if form.c0:
            m.addObjoffset(float(form.c0))
        if form.maximize:
            m.setMaximize()
        else:
            m.setMinimize()

    @property
    def n_cols(self) -> int:
        return self._n

    def _variables(self) -> list:
        if self._vars is None:
            by_name = {v.name: v for v in self._m.getVars()}
            self._vars = [by_name[f"x{j}"] for j in range(self._n)]
        return self._vars

    def _start_from_file(self, start: np.ndarray) -> None:
        with tempfile.TemporaryDirectory(prefix="qpm-scip-") as tmp:
            path = os.path.join(tmp, "start.sol")
            nz = np.flatnonzero(start)
            with open(path, "w") as fh:
                fh.write("".join(f"x{j} {v!r}\n" for j, v in
                                 zip(nz.tolist(), start[nz].tolist(), strict=True)))
            self._m.readSol(path)

    def _solution_from_file(self) -> np.ndarray:
        x = np.zeros(self._n)
        with tempfile.TemporaryDirectory(prefix="qpm-scip-") as tmp:
            path = os.path.join(tmp, "best.sol")
            self._m.writeBestSol(path, write_zeros=False)
            with open(path) as fh:
                for line in fh:
                    parts = line.split()
                    if len(parts) >= 2 and parts[0].startswith("x") and parts[0][1:].isdigit():
                        x[int(parts[0][1:])] = float(parts[1])
        return x

    def _follow(self) -> None:
        """An event handler (once per model): the dual bound after each solved node and
        every new best solution."""
        if getattr(self, "_events", None) is not None:
            return
        import pyscipopt

        session = self
        kinds = pyscipopt.SCIP_EVENTTYPE

        class Events(pyscipopt.Eventhdlr):
            def eventinit(self):
                self.model.catchEvent(kinds.NODESOLVED, self)
                self.model.catchEvent(kinds.BESTSOLFOUND, self)

            def eventexit(self):
                self.model.dropEvent(kinds.NODESOLVED, self)
                self.model.dropEvent(kinds.BESTSOLFOUND, self)

            def eventexec(self, event):
                try:
                    m = self.model
                    bound = m.getDualbound()
                    if abs(bound) < m.infinity():
                        session.report_bound(bound)
                    if event.getType() == kinds.BESTSOLFOUND and session.on_solution is not None:
                        best = m.getBestSol()
                        x = np.array([m.getSolVal(best, v) for v in session._variables()])
                        session.report_solution(x, m.getSolObjVal(best))
                except BaseException as exc:  # noqa: BLE001 - raised after the solve
                    session.callback_failed(exc)

        self._events = Events()
        self._m.includeEventhdlr(self._events, "qpm-progress", "bounds and incumbents")

    def _editable(self) -> None:
        # Changes need the original problem stage; solutions are passed again as starts.
        if self._m.getStage() > 1:  # SCIP_STAGE_PROBLEM
            self._m.freeTransform()

    def add_columns(self, lo, hi, integer, c=None) -> None:
        self._editable()
        m, n = self._m, len(lo)
        c = np.zeros(n) if c is None else np.asarray(c, dtype=np.float64)
        variables = self._variables()
        base = len(variables)
        rows = zip(
            np.asarray(lo).tolist(), np.asarray(hi).tolist(), np.asarray(integer).tolist(),
            c.tolist(), strict=True,
        )
        for j, (a, b, isint, cost) in enumerate(rows):
            vtype = "C"
            if isint:
                vtype = "B" if a >= 0 and b <= 1 else "I"
            variables.append(
                m.addVar(name=f"x{base + j}", vtype=vtype, lb=_bound(a), ub=_bound(b), obj=cost)
            )
        self._n = len(variables)

    def add_rows(self, A, lo, hi) -> None:
        from pyscipopt.scip import Expr, ExprCons, Term

        self._editable()
        A = sp.csr_array(A)
        A.sum_duplicates()
        terms = [Term(v) for v in self._variables()]
        ptr, idx, val = A.indptr.tolist(), A.indices.tolist(), A.data.tolist()
        lo, hi = np.asarray(lo).tolist(), np.asarray(hi).tolist()
        conss = []
        for r in range(A.shape[0]):
            a, b = ptr[r], ptr[r + 1]
            expr = Expr({terms[j]: v for j, v in zip(idx[a:b], val[a:b], strict=True)})
            conss.append(ExprCons(expr, lhs=_bound(lo[r]), rhs=_bound(hi[r])))
        if conss:
            self._m.addConss(conss)

    def _set_limit(self, time_limit: float | None) -> None:
        self._m.setParam("limits/time", float(time_limit) if time_limit else 1e20)

    def _interrupt(self) -> None:
        try:
            self._m.interruptSolve()
        except Exception:  # noqa: BLE001 - not solving any more (a stage without a solve)
            pass

    def solve(self, time_limit=None, mip_gap=1e-4, threads=None, start=None) -> Outcome:
        m = self._m
        self._editable()
        self._set_limit(time_limit)
        m.setParam("limits/gap", float(mip_gap))
        if threads:
            m.setParam("lp/threads", int(threads))
        if start is not None:
            start = np.asarray(start, dtype=np.float64)
            known = np.isfinite(start)
            if self._vars is None and known.all():
                self._start_from_file(start)
            else:
                sol = m.createSol() if known.all() else m.createPartialSol()
                for v, value, ok in zip(self._variables(), start.tolist(), known.tolist(),
                                        strict=True):
                    if ok:
                        m.setSolVal(sol, v, value)
                m.addSol(sol, free=True)  # a partial one is completed by SCIP
        t0 = time.perf_counter()
        if self.following:
            self._follow()
        with self.running(time_limit, self._interrupt, "scip") as stopped:
            m.optimizeNogil()  # releases the GIL, so the watchdog's threads can run
        seconds = time.perf_counter() - t0
        raw = m.getStatus()
        termination = _TERMINATION.get(raw, Termination.ERROR)
        stopped.settle(termination is Termination.INTERRUPTED)
        x = objective = None
        if m.getNSols() > 0 and termination is not Termination.INFEASIBLE:
            best = m.getBestSol()
            objective = float(m.getSolObjVal(best))
            if self._vars is None:
                x = self._solution_from_file()
            else:
                x = np.array([m.getSolVal(best, v) for v in self._vars], dtype=np.float64)
        return Outcome(
            termination=termination,
            x=x,
            objective=objective,
            bound=proven_bound(termination, m.getDualbound(), infinity=1e19),
            solve_seconds=seconds,
            message=f"SCIP status {raw}" if termination is Termination.ERROR else "",
        )


class ScipBackend(Backend):
    name = "scip"

    def available(self) -> tuple[Availability, str]:
        return installed("pyscipopt")

    def version(self) -> str:
        import pyscipopt

        return f"{pyscipopt.Model().version()} (pyscipopt {pyscipopt.__version__})"

    def load(self, form: MatrixForm) -> Session:
        if not form.integer.any():  # a pure LP: SCIP's LP interface keeps its basis
            from qpm.assignment.backends.scip_lp import ScipLPSession

            return ScipLPSession(form)
        return ScipSession(form)
