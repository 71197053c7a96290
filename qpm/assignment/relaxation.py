"""The growing model behind the cut formulation, as a Pyomo model.

Columns: ``s`` (F, binary in the MIP), ``theta`` (C, the unscaled top-k value of each class),
then lazily ``y`` (one per modelled redundancy pair), ``z`` (one per aggregated "star" of
pairs), ``w`` (F per class that needs explicit assignment variables for uniqueness). Each
call of :meth:`Relaxation.add_cols` declares one Pyomo ``Var`` block and each
:meth:`Relaxation.add_rows` one ``Constraint`` block, so the cut formulation is an ordinary
Pyomo ``ConcreteModel`` (``Relaxation.model``) that grows between solves.

It reaches the solvers the same way as the full formulation: the one
:class:`~qpm.assignment.compile.ModelCompiler` compiles it, and its ``update()`` compiles only
what was added since, which :meth:`Relaxation.sync` hands to a backend
:class:`~qpm.assignment.backends.base.Session`. Gurobi, SCIP and HiGHS therefore see exactly
the same matrix, for the root LP (integrality relaxed) and for the MIP re-solves alike.
Blocks are declared in order, so compiled column and row numbers are the ones ``add_cols``
and ``add_rows`` report; the arrays the cut loop works on index the solver's vectors directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyomo.environ as pyo
from pyomo.core.expr.numeric_expr import LinearExpression, MonomialTermExpression
from pyomo.core.expr.relational_expr import (
    EqualityExpression,
    InequalityExpression,
    RangedExpression,
)

from qpm.assignment.compile import MatrixForm, ModelCompiler
from qpm.assignment.separation import CutBatch


@dataclass
class _Cursor:
    cols: int = 0
    rows: int = 0


def _relation(body: LinearExpression, lo: float, hi: float):
    if lo == hi:
        return EqualityExpression((body, hi))
    if not math.isfinite(lo):
        return InequalityExpression((body, hi), False)
    if not math.isfinite(hi):
        return InequalityExpression((lo, body), False)
    return RangedExpression((lo, body, hi), (False, False))


class Relaxation:
    """The cut formulation's Pyomo model; ``s`` are columns 0..F-1, ``theta`` F..F+C-1."""

    def __init__(self, F: int, C: int) -> None:
        self.F, self.C = int(F), int(C)
        self.model = pyo.ConcreteModel(name="qpm_cuts")
        self.columns: list = []  # VarData in column order
        self._objective_terms: list = []
        self._objective_stale = True
        self._blocks = 0
        self.n_rows = 0
        # per row: may it be left out of a model (cuts that only tighten the bound)?
        self._optional: list[np.ndarray] = []
        self.compiler: ModelCompiler | None = None

    @property
    def n_cols(self) -> int:
        return len(self.columns)

    def _name(self, kind: str) -> str:
        self._blocks += 1
        return f"{kind}_{self._blocks}"

    # -- building -------------------------------------------------------------------------
    def add_cols(self, lo, hi, integer, cost, kind: str = "x") -> int:
        """Declare a block of variables; returns the column index of the first one.

        ``integer`` columns are binary (their bounds must lie in [0, 1]).
        """
        lo = np.asarray(lo, dtype=np.float64)
        n = lo.size
        hi = np.broadcast_to(np.asarray(hi, dtype=np.float64), (n,))
        integer = np.broadcast_to(np.asarray(integer, dtype=bool), (n,))
        cost = np.broadcast_to(np.asarray(cost, dtype=np.float64), (n,))
        # Uniform blocks take scalar initialisers; dicts otherwise (rule functions would cost
        # Pyomo a signature inspection per block).
        bounds: object = [(None if not math.isfinite(a) else a, None if not math.isfinite(b) else b)
                          for a, b in zip(lo.tolist(), hi.tolist(), strict=True)]
        bounds = bounds[0] if n and bounds.count(bounds[0]) == n else dict(enumerate(bounds))
        within: object = pyo.Binary if integer.all() else pyo.Reals
        if integer.any() and not integer.all():
            within = {j: pyo.Binary if b else pyo.Reals for j, b in enumerate(integer.tolist())}
        var = pyo.Var(range(n), dense=True, within=within, bounds=bounds)
        self.model.add_component(self._name(kind), var)
        first = len(self.columns)
        block = list(var.values())
        self.columns.extend(block)
        terms = [MonomialTermExpression((a, v))
                 for a, v in zip(cost.tolist(), block, strict=True) if a]
        if terms:
            self._objective_terms.extend(terms)
            self._objective_stale = True
        return first

    def add_rows(self, indptr, indices, values, lo, hi, optional: bool = False,
                 kind: str = "rows") -> None:
        """Declare rows ``lo <= sum values * x[indices] <= hi`` given in CSR pieces.

        ``optional`` rows (top-k cuts, cliques) only tighten the relaxation; every row that
        makes a 0/1 point priced exactly (pairs, stars, assignments) is not optional.
        """
        lo = np.asarray(lo, dtype=np.float64)
        m = lo.size
        if m == 0:
            return
        hi = np.broadcast_to(np.asarray(hi, dtype=np.float64), (m,)).tolist()
        ptr = np.asarray(indptr, dtype=np.int64).tolist()
        cols = self.columns
        idx = np.asarray(indices, dtype=np.int64).tolist()
        val = np.asarray(values, dtype=np.float64).tolist()
        los = lo.tolist()

        rows = {}
        for r in range(m):
            body = LinearExpression([MonomialTermExpression((val[t], cols[idx[t]]))
                                     for t in range(ptr[r], ptr[r + 1])])
            rows[r] = _relation(body, los[r], hi[r])
        self.model.add_component(self._name(kind), pyo.Constraint(range(m), rule=rows))
        self._optional.append(np.full(m, bool(optional)))
        self.n_rows += m

    def add_fixed_width(self, idx: np.ndarray, val: np.ndarray, lo, hi,
                        kind: str = "rows") -> None:
        """Rows with the same number of entries each: ``idx`` and ``val`` are (m, width)."""
        m, width = idx.shape
        self.add_rows(np.arange(m + 1) * width, idx.ravel(), val.ravel(),
                      np.broadcast_to(np.asarray(lo, dtype=np.float64), (m,)), hi, kind=kind)

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
        self.add_rows(indptr, idx, val, np.full(m, -math.inf), cb.rhs, kind="topk")

    # -- compiling and handing over ---------------------------------------------------------
    def compile(self) -> ModelCompiler:
        """Compile what was declared since the last call (the first call compiles all)."""
        if self._objective_stale:
            expr = LinearExpression(list(self._objective_terms))
            if hasattr(self.model, "objective"):
                self.model.objective.expr = expr
            else:
                self.model.objective = pyo.Objective(expr=expr, sense=pyo.maximize)
            self._objective_stale = False
        if self.compiler is None:
            self.compiler = ModelCompiler(self.model)
        else:
            self.compiler.update()
        form = self.compiler.form
        if form.n_cols != self.n_cols or form.n_rows != self.n_rows:
            # Blocks compile in declaration order; anything else would shift the numbering.
            raise RuntimeError(f"compiled {form.n_cols} columns / {form.n_rows} rows, declared "
                               f"{self.n_cols} / {self.n_rows}")
        return self.compiler

    def tight_rows(self, x: np.ndarray, tol: float = 1e-6) -> np.ndarray:
        """Rows to keep at point ``x``: every required row, and optional ones within tol."""
        form = self.compile().form
        xx = np.zeros(self.n_cols)
        xx[: x.size] = x[: self.n_cols]
        ax = form.A @ xx
        rhi = form.row_hi
        tight = (ax >= rhi - tol * np.maximum(1.0, np.abs(rhi))) | np.isfinite(form.row_lo)
        return ~np.concatenate(self._optional) | tight

    def form(self, integral: bool, keep: np.ndarray | None = None) -> MatrixForm:
        """The model as a maximisation; ``integral`` False relaxes integrality and ``keep``
        (a row mask) deactivates the other rows' constraints in the Pyomo model for good."""
        compiler = self.compile()
        if keep is not None:
            for r in np.flatnonzero(~np.asarray(keep, dtype=bool)).tolist():
                compiler.row_constraints[r].deactivate()
        return compiler.active_form(relax_integrality=not integral)

    def cursor(self) -> _Cursor:
        form = self.compile().form
        return _Cursor(form.n_cols, form.n_rows)

    def sync(self, session, cursor: _Cursor, integral: bool) -> None:
        """Hand ``session`` the columns and rows added since ``cursor`` (updated in place)."""
        form = self.compile().form
        a = cursor.cols
        if form.n_cols > a:
            session.add_columns(form.col_lo[a:], form.col_hi[a:], form.integer[a:] & integral,
                                form.c[a:])
            cursor.cols = form.n_cols
        if form.n_rows > cursor.rows:
            rows = np.arange(cursor.rows, form.n_rows)
            session.add_rows(form.A[rows], form.row_lo[rows], form.row_hi[rows])
            cursor.rows = form.n_rows
