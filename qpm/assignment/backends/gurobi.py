"""Gurobi through gurobipy's matrix API (``addMVar`` / ``addMConstr``), which scales.

The pip wheel ships a size-limited licence (2000 variables, 2000 linear constraints): the
backend's availability is then ``limited_licence`` (probed once per process with a throw-away
2001-variable model, so a full licence is used in full), and a model over the limit gets a
:class:`~qpm.assignment.backends.base.RefusedSession` before any hand-off; a model that grows
over it later ends its solve with ``licence_limit`` as well.
"""

from __future__ import annotations

import functools
import time

import numpy as np
import scipy.sparse as sp

from qpm.assignment.backends.base import (
    Backend,
    MatrixForm,
    Outcome,
    RefusedSession,
    Session,
    installed,
    proven_bound,
)
from qpm.assignment.status import Availability, Termination
from qpm.errors import QPMError

SIZE_LIMIT = 2000  # variables and linear constraints under the size-limited licence
# Gurobi's own cut families for products of binaries and quadratic terms, which users with a
# full licence may switch on (``qpm solve --gurobi-param BQPCuts=2``); any other Gurobi
# parameter passes through the same way. On qpm's models (products linearised exactly, no
# quadratic terms) BQPCuts is the one that applies; PSDCuts, RLTCuts and PreQLinearize act on
# quadratic models only and leave these unchanged.
CUT_PARAMETERS = ("PSDCuts", "RLTCuts", "BQPCuts", "PreQLinearize")
TOO_LARGE = 10010  # GurobiError code: "Model too large for size-limited license"


@functools.lru_cache(maxsize=1)
def _env():
    import gurobipy as gp

    return gp.Env(params={"OutputFlag": 0})


@functools.lru_cache(maxsize=1)
def size_limited() -> bool:
    """True when the licence in use is the size-limited one."""
    import gurobipy as gp

    with gp.Model(env=_env()) as probe:
        probe.addMVar(SIZE_LIMIT + 1)
        try:
            probe.optimize()
        except gp.GurobiError as exc:
            if exc.errno == TOO_LARGE:
                return True
            raise
    return False


def _split_rows(A: sp.csr_array, lo: np.ndarray, hi: np.ndarray):
    """Gurobi rows have one sense: ranged rows become a >= and a <= row."""
    A = sp.csr_array(A)
    eq = np.isfinite(lo) & np.isfinite(hi) & (lo == hi)
    ge = np.isfinite(lo) & ~eq
    le = np.isfinite(hi) & ~eq
    parts = []
    for mask, sense, rhs in ((eq, "=", lo), (ge, ">", lo), (le, "<", hi)):
        rows = np.flatnonzero(mask)
        if rows.size:
            parts.append((A[rows], np.full(rows.size, sense), rhs[rows]))
    return parts


class GurobiSession(Session):
    def __init__(self, form: MatrixForm, params: dict | None = None) -> None:
        import gurobipy as gp

        self._gp = gp
        self._m = gp.Model(env=_env())
        for name, value in (params or {}).items():
            set_param(self._m, name, value)
        self._vars: list = []
        self._integer = False
        self.add_columns(form.col_lo, form.col_hi, form.integer, form.c)
        self._m.ModelSense = gp.GRB.MAXIMIZE if form.maximize else gp.GRB.MINIMIZE
        self._m.ObjCon = float(form.c0)
        self.add_rows(form.A, form.row_lo, form.row_hi)

    @property
    def n_cols(self) -> int:
        return len(self._vars)

    def add_columns(self, lo, hi, integer, c=None) -> None:
        GRB = self._gp.GRB
        n = len(lo)
        lo = np.where(np.isfinite(lo), lo, -GRB.INFINITY)
        hi = np.where(np.isfinite(hi), hi, GRB.INFINITY)
        binary = np.asarray(integer) & (lo >= 0) & (hi <= 1)
        self._integer = self._integer or bool(np.any(integer))
        vtype = np.where(binary, GRB.BINARY, np.where(integer, GRB.INTEGER, GRB.CONTINUOUS))
        obj = np.zeros(n) if c is None else np.asarray(c, dtype=np.float64)
        x = self._m.addMVar(n, lb=lo, ub=hi, obj=obj, vtype=vtype)
        self._vars.extend(x.tolist())

    def add_rows(self, A, lo, hi) -> None:
        x = self._gp.MVar.fromlist(self._vars)
        for part, sense, rhs in _split_rows(A, np.asarray(lo, float), np.asarray(hi, float)):
            self._m.addMConstr(sp.csr_matrix(part), x, sense, rhs)

    def _callback(self, stopped):
        """Gurobi's callback. Its first call puts qpm's SIGINT handler back in place of the one
        Gurobi installs for the solve (which would end it as "interrupted" and print on
        stdout); when following, it reports the dual bound while Gurobi branches and each new
        incumbent."""
        GRB = self._gp.GRB
        variables = self._vars
        follow = self.following
        first = [True]

        def bound(value: float) -> None:
            if abs(value) < GRB.INFINITY:
                self.report_bound(value)

        def callback(model, where) -> None:
            try:
                if first[0]:
                    first[0] = False
                    stopped.reclaim()
                if not follow:
                    return
                if where == GRB.Callback.MIP:
                    bound(model.cbGet(GRB.Callback.MIP_OBJBND))
                elif where == GRB.Callback.MIPSOL:
                    bound(model.cbGet(GRB.Callback.MIPSOL_OBJBND))
                    self.report_solution(model.cbGetSolution(variables),
                                         model.cbGet(GRB.Callback.MIPSOL_OBJ))
            except BaseException as exc:  # noqa: BLE001 - raised after the solve
                self.callback_failed(exc)

        return callback

    def _set_limit(self, time_limit: float | None) -> None:
        GRB = self._gp.GRB
        self._m.Params.TimeLimit = float(time_limit) if time_limit else GRB.INFINITY

    def solve(self, time_limit=None, mip_gap=1e-4, threads=None, start=None) -> Outcome:
        gp, m = self._gp, self._m
        GRB = gp.GRB
        self._set_limit(time_limit)
        m.Params.MIPGap = float(mip_gap)
        if threads:
            m.Params.Threads = int(threads)
        if start is not None:
            start = np.asarray(start, dtype=np.float64)
            x = gp.MVar.fromlist(self._vars)
            x.Start = np.where(np.isfinite(start), start, GRB.UNDEFINED)
        t0 = time.perf_counter()
        try:
            # terminate() is thread-safe
            with self.running(time_limit, m.terminate, "gurobi" if self._integer else None
                              ) as stopped:
                m.optimize(self._callback(stopped))
        except gp.GurobiError as exc:
            why = Termination.LICENCE_LIMIT if exc.errno == TOO_LARGE else Termination.ERROR
            return Outcome(why, message=f"Gurobi error {exc.errno}: {exc}")
        seconds = time.perf_counter() - t0
        st = m.Status
        termination = {
            GRB.OPTIMAL: Termination.OPTIMAL, GRB.TIME_LIMIT: Termination.TIME_LIMIT,
            GRB.INTERRUPTED: Termination.INTERRUPTED, GRB.NODE_LIMIT: Termination.OTHER_LIMIT,
            GRB.SOLUTION_LIMIT: Termination.OTHER_LIMIT, GRB.INFEASIBLE: Termination.INFEASIBLE,
            GRB.INF_OR_UNBD: Termination.INFEASIBLE,
        }.get(st, Termination.ERROR)
        stopped.settle(termination is Termination.INTERRUPTED)
        x = objective = bound = None
        if m.SolCount > 0 and termination is not Termination.INFEASIBLE:
            x = np.asarray(gp.MVar.fromlist(self._vars).X, dtype=np.float64)
            objective = float(m.ObjVal)
        if m.IsMIP and (termination is Termination.OPTIMAL or termination.stopped_early):
            bound = proven_bound(termination, m.ObjBound, infinity=GRB.INFINITY)
        return Outcome(
            termination=termination,
            x=x,
            objective=objective,
            bound=bound,
            solve_seconds=seconds,
            message=f"Gurobi status {st}" if termination is Termination.ERROR else "",
        )

    def close(self) -> None:
        self._m.dispose()


def set_param(model, name: str, value) -> None:
    """One Gurobi parameter on ``model``; an unknown name or a bad value is one clear line."""
    import gurobipy as gp

    try:
        model.setParam(name, value)
    except gp.GurobiError as exc:
        raise QPMError(f"Gurobi refuses parameter {name}={value!r}: {exc}.",
                       f"Check the name and value (e.g. {CUT_PARAMETERS[2]}=2) in Gurobi's "
                       "parameter reference.") from None


class GurobiBackend(Backend):
    """``params``: Gurobi parameters set on every model it loads (e.g. ``{"BQPCuts": 2}``)."""

    name = "gurobi"

    def __init__(self, params: dict | None = None) -> None:
        self.params = dict(params or {})

    def available(self) -> tuple[Availability, str]:
        state = installed("gurobipy")
        if state[0] is not Availability.AVAILABLE:
            return state
        import gurobipy as gp

        try:
            _env()
        except gp.GurobiError as exc:
            return Availability.NO_LICENCE, f"Gurobi has no usable licence ({exc})."
        if size_limited():
            return Availability.LIMITED_LICENCE, (
                f"the size-limited licence takes at most {SIZE_LIMIT} variables and "
                f"{SIZE_LIMIT} constraints")
        return Availability.AVAILABLE, ""

    def version(self) -> str:
        import gurobipy as gp

        return ".".join(str(v) for v in gp.gurobi.version())

    def size_limit(self) -> tuple[int, int] | None:
        return (SIZE_LIMIT, SIZE_LIMIT) if size_limited() else None

    def load(self, form: MatrixForm) -> Session:
        if not self.fits(form.n_cols, form.n_rows):
            return RefusedSession(form, self.too_large(form.n_cols, form.n_rows))
        return GurobiSession(form, self.params)
