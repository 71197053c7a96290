"""Compile a linear Pyomo model into one sparse matrix form that every backend loads natively.

One walk over the model's constraints (a fast path for sums of monomials and for Pyomo's
``MatrixConstraint`` blocks, Pyomo's standard repn for anything else) gives the matrix, so
all backends see exactly the same model (2-3x faster than Pyomo's
LinearStandardFormCompiler on these models). Constraints and variables added to the Pyomo
model later (lazy uniqueness, cuts) are compiled on their own by
:meth:`ModelCompiler.update`, which returns only the new columns and rows, so a backend
session can extend the model it already holds instead of receiving everything again.
New variables may carry objective terms (the objective expression is then re-read; the
coefficients of existing columns must not change), and compiled rows can be dropped from a
later hand-off by deactivating their constraints (:meth:`ModelCompiler.active_form`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyomo.environ as pyo
import scipy.sparse as sp
from pyomo.core.base.matrix_constraint import _MatrixConstraintData as MatrixRow
from pyomo.core.base.var import ScalarVar, VarData
from pyomo.core.expr.numeric_expr import LinearExpression, MonomialTermExpression, SumExpression
from pyomo.core.expr.relational_expr import (
    EqualityExpression,
    InequalityExpression,
    RangedExpression,
)
from pyomo.repn.standard_repn import generate_standard_repn

from qpm.assignment.backends.base import MatrixForm
from qpm.errors import QPMError


@dataclass
class Delta:
    """Columns and rows added to a model since the last compile (``A`` spans all columns)."""

    col_lo: np.ndarray
    col_hi: np.ndarray
    integer: np.ndarray
    c: np.ndarray
    start: np.ndarray
    A: sp.csr_array
    row_lo: np.ndarray
    row_hi: np.ndarray


def _column_data(columns) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    n = len(columns)
    lo, hi = np.empty(n), np.empty(n)
    integer, start = np.zeros(n, dtype=bool), np.full(n, np.nan)
    for j, v in enumerate(columns):
        lb, ub = v.bounds
        lo[j] = -math.inf if lb is None else lb
        hi[j] = math.inf if ub is None else ub
        integer[j] = v.is_integer()
        if v.value is not None:
            start[j] = v.value
    return lo, hi, integer, start


class _Fallback(Exception):
    """An expression the fast walker does not read; Pyomo's standard repn takes it."""


_NUMBERS = (int, float)
_VARS = (VarData, ScalarVar)


def _terms(expr, sign: float, cols: list, vals: list, column) -> float:
    """Append ``sign * expr``'s linear terms to cols/vals; return its constant part."""
    t = type(expr)
    if t in _NUMBERS:
        return sign * expr
    if t in _VARS:
        args = (expr,)
    elif t is LinearExpression or t is SumExpression:
        args = expr.args
    elif t is MonomialTermExpression:
        args = (expr,)
    else:
        raise _Fallback
    const = 0.0
    for a in args:
        ta = type(a)
        if ta is MonomialTermExpression:
            coef, v = a.args
            if type(coef) not in _NUMBERS:
                coef = pyo.value(coef)
            if type(v) not in _VARS:
                raise _Fallback
        elif ta in _VARS:
            coef, v = 1.0, a
        elif ta in _NUMBERS:
            const += a
            continue
        else:
            raise _Fallback
        if v.fixed:
            const += coef * v.value
            continue
        cols.append(column(v))
        vals.append(sign * coef)
    return sign * const


def _row(con, cols: list, vals: list, column) -> tuple[float, float]:
    """Append one constraint's terms; return its (lo, hi) with the constant moved over."""
    e = con.expr
    t = type(e)
    n = len(cols)
    try:
        if t is InequalityExpression or t is EqualityExpression:
            lhs, rhs = e.args
            if type(rhs) in _NUMBERS:  # body <= rhs
                const = _terms(lhs, 1.0, cols, vals, column)
                lo, hi = -math.inf, rhs - const
            elif type(lhs) in _NUMBERS:  # lhs <= body
                const = _terms(rhs, 1.0, cols, vals, column)
                lo, hi = lhs - const, math.inf
            else:  # lhs - rhs <= 0
                const = _terms(lhs, 1.0, cols, vals, column)
                const += _terms(rhs, -1.0, cols, vals, column)
                lo, hi = -math.inf, -const
            if t is EqualityExpression:
                lo = hi = hi if math.isfinite(hi) else lo
            return lo, hi
        if t is RangedExpression:
            lo, body, hi = e.args
            if type(lo) not in _NUMBERS or type(hi) not in _NUMBERS:
                raise _Fallback
            const = _terms(body, 1.0, cols, vals, column)
            return lo - const, hi - const
    except _Fallback:
        del cols[n:]
        del vals[n:]
    return _repn_row(con, cols, vals, column)


def _repn_row(con, cols: list, vals: list, column) -> tuple[float, float]:
    repn = generate_standard_repn(con.body, compute_values=True, quadratic=False)
    if not repn.is_linear():
        raise QPMError(
            f"Constraint {con.name} is not linear.",
            "Presets must add linear constraints (linearise products with extra variables).",
        )
    for v, a in zip(repn.linear_vars, repn.linear_coefs, strict=True):
        cols.append(column(v))
        vals.append(float(a))
    shift = float(repn.constant)
    lo = -math.inf if con.lower is None else pyo.value(con.lower) - shift
    hi = math.inf if con.upper is None else pyo.value(con.upper) - shift
    return lo, hi


class ModelCompiler:
    """Keeps the column order of a model so later additions compile to a :class:`Delta`.

    A fast walker reads the expression shapes models are made of (sums of monomials,
    relational expressions) directly; anything else goes through Pyomo's standard repn.
    Fixed variables become constants, as in Pyomo's own writers.
    """

    def __init__(self, model) -> None:
        self.model = model
        objectives = list(model.component_data_objects(pyo.Objective, active=True))
        if len(objectives) != 1:
            raise QPMError(
                f"The model has {len(objectives)} active objectives; exactly one is needed.",
                "Deactivate the extra objectives in the preset.",
            )
        self._complete: dict[int, int] = {}  # component id -> members taken, all of them
        # Through _unvisited so that update() skips these variable blocks later.
        columns = [v for v in self._unvisited(pyo.Var) if not v.fixed]
        self._col = {id(v): j for j, v in enumerate(columns)}
        self._columns = columns
        self._rows: set[int] = set()
        self._matrix_columns: dict[int, list[int]] = {}  # MatrixConstraint -> its columns
        #: the constraint behind each compiled row, in row order
        self.row_constraints: list = []
        self._objective = objectives[0]
        n_declared = len(columns)
        A, row_lo, row_hi = self._compile_rows()
        c, c0 = self._compile_objective()
        n = len(columns)
        lo, hi, integer, start = _column_data(columns)
        if n > n_declared:  # variables of other blocks referenced by this model's rows
            A = _widen(A, n)
        self.form = MatrixForm(
            c=c,
            c0=float(c0),
            maximize=objectives[0].sense == pyo.maximize,
            A=A,
            row_lo=row_lo,
            row_hi=row_hi,
            col_lo=lo,
            col_hi=hi,
            integer=integer,
            columns=columns,
            start=start,
        )

    def _compile_objective(self) -> tuple[np.ndarray, float]:
        """Objective coefficients over the current columns (new variables get columns)."""
        expr = self._objective.expr
        self._objective_expr = expr
        obj_cols: list = []
        obj_vals: list = []
        try:
            c0 = _terms(expr, 1.0, obj_cols, obj_vals, self._column)
        except _Fallback:
            obj_cols.clear()
            obj_vals.clear()
            repn = generate_standard_repn(expr, compute_values=True, quadratic=False)
            if not repn.is_linear():
                raise QPMError("The objective is not linear.", "Keep the model linear.") from None
            obj_cols = [self._column(v) for v in repn.linear_vars]
            obj_vals = [float(a) for a in repn.linear_coefs]
            c0 = float(repn.constant)
        c = np.zeros(len(self._columns))
        np.add.at(c, np.asarray(obj_cols, dtype=np.int64), np.asarray(obj_vals, dtype=np.float64))
        return c, float(c0)

    def _appended_objective(self) -> tuple[np.ndarray | None, float]:
        """The objective's new terms alone, when the new expression is the compiled one with
        terms appended (how growing models extend it); (None, 0) otherwise."""
        old, new = self._objective_expr, self._objective.expr
        if type(old) is not LinearExpression or type(new) is not LinearExpression:
            return None, 0.0
        head, args = old.args, new.args
        if len(args) < len(head) or any(a is not b for a, b in zip(head, args, strict=False)):
            return None, 0.0
        cols: list = []
        vals: list = []
        try:
            c0 = _terms(LinearExpression(list(args[len(head):])), 1.0, cols, vals, self._column)
        except _Fallback:
            return None, 0.0
        self._objective_expr = new
        c = np.zeros(len(self._columns))
        np.add.at(c, np.asarray(cols, dtype=np.int64), np.asarray(vals, dtype=np.float64))
        return c, float(c0)

    def _register_new_variables(self) -> None:
        """Columns for variables declared since the last compile, in declaration order (so a
        model that appends variable blocks knows their column numbers in advance)."""
        for v in self._unvisited(pyo.Var):
            if not v.fixed and id(v) not in self._col:
                self._column(v)

    def _unvisited(self, ctype):
        """Data objects of ``ctype`` components, skipping every component whose members
        were all taken before (models that grow by new blocks stay cheap to update)."""
        for comp in self.model.component_objects(ctype, active=True, descend_into=True):
            n = len(comp)
            if self._complete.get(id(comp)) == n:
                continue
            taken = True
            for data in comp.values():
                if ctype is pyo.Var:
                    taken &= not data.fixed
                elif not data.active:
                    taken = False
                    continue
                yield data
            if taken:  # a fixed variable or an inactive row may come back later
                self._complete[id(comp)] = n

    def _column(self, v) -> int:
        j = self._col.get(id(v))
        if j is None:
            j = self._col[id(v)] = len(self._columns)
            self._columns.append(v)
        return j

    def _matrix_row(self, con, cols: list, vals: list) -> tuple[float, float] | None:
        """A row of a Pyomo ``MatrixConstraint`` read from its CSR arrays (no expression is
        built); None when the block has a fixed variable (the general path handles that)."""
        comp = con.parent_component()
        key = id(comp)
        colmap = self._matrix_columns.get(key)
        if colmap is None:
            if any(v.fixed for v in comp._x):
                return None
            colmap = self._matrix_columns[key] = [self._column(v) for v in comp._x]
        r = con._index
        a, b = comp._A_indptr[r], comp._A_indptr[r + 1]
        cols.extend([colmap[j] for j in comp._A_indices[a:b]])
        vals.extend(comp._A_data[a:b])
        lo, hi = comp._lower[r], comp._upper[r]
        return (-math.inf if lo is None else float(lo)), (math.inf if hi is None else float(hi))

    def _compile_rows(self) -> tuple[sp.csr_array, np.ndarray, np.ndarray]:
        """All active constraints not compiled yet, as CSR rows over the current columns."""
        cols: list = []
        vals: list = []
        ptr = [0]
        lo: list = []
        hi: list = []
        seen = self._rows
        for con in self._unvisited(pyo.Constraint):
            key = id(con)
            if key in seen:
                continue
            seen.add(key)
            if isinstance(con, MatrixRow):  # rows of a Pyomo MatrixConstraint: read its arrays
                bounds = self._matrix_row(con, cols, vals)
                a, b = bounds if bounds is not None else _repn_row(con, cols, vals, self._column)
            else:
                a, b = _row(con, cols, vals, self._column)
            if len(cols) == ptr[-1]:
                continue  # no variables left (e.g. all fixed): nothing for a solver
            self.row_constraints.append(con)
            ptr.append(len(cols))
            lo.append(a)
            hi.append(b)
        A = sp.csr_array(
            (
                np.asarray(vals, dtype=np.float64),
                np.asarray(cols, dtype=np.int64),
                np.asarray(ptr, dtype=np.int64),
            ),
            shape=(len(lo), len(self._columns)),
        )
        A.sum_duplicates()
        return A, np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)

    def update(self) -> Delta:
        """Compile the constraints (and their new variables) added since the last call."""
        form = self.form
        before = form.n_cols
        # New variables are appended to self._columns (= form.columns): declared ones first,
        # then any of another block that a new row mentions.
        self._register_new_variables()
        A, lo, hi = self._compile_rows()
        c_new = np.zeros(len(form.columns) - before)
        if self._objective.expr is not self._objective_expr:
            c, c0 = self._appended_objective()
            if c is None:
                c, c0 = self._compile_objective()
                c[:before] -= form.c
                c0 -= form.c0
            if c0 != 0.0 or np.any(c[:before]):
                raise QPMError(
                    "The objective changed for variables that a solver already holds.",
                    "Only give new variables objective terms, or compile the model afresh.")
            c_new = c[before:]
        new_vars = form.columns[before:]
        n_total = len(form.columns)
        if A.shape[1] < n_total:
            A = _widen(A, n_total)
        clo, chi, integer, start = _column_data(new_vars)
        delta = Delta(clo, chi, integer, c_new, start, A, lo, hi)
        for name in ("col_lo", "col_hi", "integer", "c", "start"):
            setattr(form, name, np.concatenate([getattr(form, name), getattr(delta, name)]))
        form.A = sp.csr_array(sp.vstack([_widen(form.A, n_total), A], format="csr"))
        form.row_lo = np.concatenate([form.row_lo, lo])
        form.row_hi = np.concatenate([form.row_hi, hi])
        return delta

    def active_form(self, relax_integrality: bool = False) -> MatrixForm:
        """The compiled model without the rows whose constraints are now deactivated.

        ``relax_integrality`` gives the LP relaxation (every column continuous).
        """
        form = self.form
        active = np.fromiter((con.active for con in self.row_constraints), dtype=bool,
                             count=len(self.row_constraints))
        rows = np.flatnonzero(active)
        return MatrixForm(
            c=form.c, c0=form.c0, maximize=form.maximize,
            A=form.A if rows.size == form.n_rows else sp.csr_array(form.A[rows]),
            row_lo=form.row_lo[rows], row_hi=form.row_hi[rows],
            col_lo=form.col_lo, col_hi=form.col_hi,
            integer=np.zeros_like(form.integer) if relax_integrality else form.integer,
            columns=form.columns, start=form.start,
        )

    def current_start(self) -> np.ndarray:
        """The Pyomo variables' current values in column order (NaN where unset)."""
        return np.array(
            [np.nan if v.value is None else v.value for v in self.form.columns], dtype=np.float64
        )

    def store(self, x: np.ndarray) -> None:
        """Write a solution vector back into the Pyomo variables."""
        for v, value in zip(self.form.columns, np.asarray(x).tolist(), strict=True):
            v.set_value(value, skip_validation=True)


def _widen(A: sp.csr_array, n_cols: int) -> sp.csr_array:
    if A.shape[1] == n_cols:
        return A
    return sp.csr_array((A.data, A.indices, A.indptr), shape=(A.shape[0], n_cols))


def compile_model(model) -> MatrixForm:
    """The matrix form of a linear Pyomo model with one objective."""
    return ModelCompiler(model).form
