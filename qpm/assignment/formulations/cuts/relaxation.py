"""The growing model behind the cut formulation, as a Pyomo model.

Columns: ``s`` (F, binary in the MIP), ``theta`` (C, the unscaled top-k value of each class),
then lazily ``y`` (one per modelled redundancy pair), ``z`` (one per aggregated "star" of
pairs), ``w`` (F per class that needs explicit assignment variables for uniqueness). Each
call of :meth:`Relaxation.add_cols` declares one Pyomo ``Var`` block and each
:meth:`Relaxation.add_rows` one constraint block, so the cut formulation is an ordinary
Pyomo ``ConcreteModel`` (``Relaxation.model``) that grows between solves. Row blocks are
Pyomo ``MatrixConstraint`` components (CSR arrays over the block's variables, as Pyomo's
writers read them), so a round of a thousand dense cuts costs no per-coefficient objects.

It reaches the solvers the same way as the full formulation: the one
:class:`~qpm.assignment.formulations.compile.ModelCompiler` compiles it, and its
``update()`` compiles only what was added since, which :meth:`Relaxation.sync` hands to a backend
:class:`~qpm.assignment.backends.base.Session`. Gurobi, SCIP and HiGHS therefore see exactly
the same matrix, for the root LP (integrality relaxed) and for the MIP re-solves alike.
Blocks are declared in order, so compiled column and row numbers are the ones ``add_cols``
and ``add_rows`` report; the arrays the cut loop works on index the solver's vectors directly.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, field

import numpy as np
import pyomo.environ as pyo
from pyomo.core.base.matrix_constraint import MatrixConstraint, _MatrixConstraintData
from pyomo.core.expr.numeric_expr import LinearExpression, MonomialTermExpression

from qpm.assignment.formulations.compile import MatrixForm, ModelCompiler
from qpm.assignment.formulations.cuts.separation import CutBatch


@dataclass
class _Cursor:
    """What one session holds: the first ``cols`` columns, and of the first ``rows`` compiled
    rows those marked in ``live`` (rows can be dropped again, see :meth:`Relaxation.drop`)."""

    cols: int = 0
    rows: int = 0
    live: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))


class _Row(_MatrixConstraintData):
    """A row of a :class:`_RowBlock`, with the bounded form Pyomo's current writers ask for."""

    __slots__ = ()

    def to_bounded_expression(self, evaluate_bounds=False):
        return self.lower, self.body, self.upper

    @property
    def expr(self):
        return _relation(self.body, self.lower, self.upper)


def _relation(body, lo, hi):
    if lo is not None and lo == hi:
        return body == hi
    if lo is None:
        return body <= hi
    if hi is None:
        return lo <= body
    return pyo.inequality(lo, body, hi)


class _RowBlock(MatrixConstraint):
    """Pyomo's MatrixConstraint (rows stored as CSR arrays, no expression objects until a
    writer asks for one) with the iterator signatures and row methods Pyomo's current
    block iterators and writers call, so they read and write the model too."""

    def construct(self, data=None):
        if self._constructed:
            return
        self._constructed = True
        ref = weakref.ref(self)
        self._data = tuple(_Row(i, ref) for i in range(len(self._lower)))

    def values(self, *args, **kwargs):
        return iter(self._data)

    def keys(self, *args, **kwargs):
        return iter(range(len(self._data)))

    def items(self, *args, **kwargs):
        return enumerate(self._data)


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
        # per row: is it a cut the root LP may drop while it is slack (top-k, cliques)?
        self._cut: list[np.ndarray] = []
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
                 kind: str = "rows", cut: bool | None = None) -> None:
        """Declare rows ``lo <= sum values * x[indices] <= hi`` given in CSR pieces.

        ``optional`` rows (cliques) only tighten the relaxation; every row that makes a 0/1
        point priced exactly (pairs, stars, assignments) is not optional. ``cut`` rows
        (default: the optional ones) may leave the root LP while they are slack.
        """
        lo = np.asarray(lo, dtype=np.float64)
        m = lo.size
        if m == 0:
            return
        hi = np.broadcast_to(np.asarray(hi, dtype=np.float64), (m,))
        idx = np.asarray(indices, dtype=np.int64)
        # A MatrixConstraint is a Pyomo constraint block stored as CSR over its own variable
        # list: no expression object per coefficient (cut rounds add millions of them).
        used, local = np.unique(idx, return_inverse=True)
        cols = self.columns
        block = _RowBlock(
            np.asarray(values, dtype=np.float64).tolist(), local.tolist(),
            np.asarray(indptr, dtype=np.int64).tolist(),
            [None if not math.isfinite(v) else v for v in lo.tolist()],
            [None if not math.isfinite(v) else v for v in hi.tolist()],
            [cols[j] for j in used.tolist()],
        )
        self.model.add_component(self._name(kind), block)
        self._optional.append(np.full(m, bool(optional)))
        self._cut.append(np.full(m, bool(optional if cut is None else cut)))
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
        self.add_rows(indptr, idx, val, np.full(m, -math.inf), cb.rhs, kind="topk", cut=True)

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

    def tight_rows(self, x: np.ndarray, tol: float = 1e-6,
                   live: np.ndarray | None = None) -> np.ndarray:
        """Rows to keep at point ``x``: every row that is neither optional nor a cut, and the
        others (cuts, cliques) when tight at ``x`` or marked in ``live`` (e.g. the rows the
        root LP still held)."""
        form = self.compile().form
        xx = np.zeros(self.n_cols)
        xx[: x.size] = x[: self.n_cols]
        ax = form.A @ xx
        rhi = form.row_hi
        tight = (ax >= rhi - tol * np.maximum(1.0, np.abs(rhi))) | np.isfinite(form.row_lo)
        if live is not None:
            tight[: live.size] |= live
        droppable = np.concatenate(self._optional) | np.concatenate(self._cut)
        return ~droppable | tight

    def form(self, integral: bool, keep: np.ndarray | None = None) -> MatrixForm:
        """The model as a maximisation; ``integral`` False relaxes integrality and ``keep``
        (a row mask) deactivates the other rows' constraints in the Pyomo model for good."""
        compiler = self.compile()
        if keep is not None:
            for r in np.flatnonzero(~np.asarray(keep, dtype=bool)).tolist():
                compiler.row_constraints[r].deactivate()
        return compiler.active_form(relax_integrality=not integral)

    def cursor(self, live: np.ndarray | None = None) -> _Cursor:
        """A cursor for a session just loaded with the compiled model (``live``: its rows)."""
        form = self.compile().form
        if live is None:
            live = np.ones(form.n_rows, dtype=bool)
        return _Cursor(form.n_cols, form.n_rows, np.asarray(live, dtype=bool).copy())

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
            cursor.live = np.concatenate([cursor.live, np.ones(rows.size, dtype=bool)])

    def slack_cuts(self, x: np.ndarray, cursor: _Cursor, before: int, tol: float = 1e-6
                   ) -> np.ndarray:
        """Compiled ids of the cut rows live in ``cursor``'s session, declared before row
        ``before``, that are slack at ``x`` (a point of that session)."""
        form = self.compile().form
        cand = np.flatnonzero(cursor.live[:before] & np.concatenate(self._cut)[:before])
        if cand.size == 0:
            return cand
        xx = np.zeros(form.n_cols)
        xx[: min(x.size, form.n_cols)] = x[: form.n_cols]
        act = form.A[cand] @ xx
        hi = form.row_hi[cand]
        return cand[act < hi - tol * np.maximum(1.0, np.abs(hi))]

    def drop(self, session, cursor: _Cursor, rows: np.ndarray) -> int:
        """Remove compiled ``rows`` from ``session`` (the model keeps them); the number gone."""
        rows = np.asarray(rows, dtype=np.int64)
        rows = rows[cursor.live[rows]]
        if rows.size == 0:
            return 0
        positions = np.cumsum(cursor.live)[rows] - 1  # each row's place in the session
        if not session.delete_rows(np.sort(positions)):
            return 0
        cursor.live[rows] = False
        return int(rows.size)
