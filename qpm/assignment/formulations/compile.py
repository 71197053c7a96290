"""Compile a linear Pyomo model into one sparse matrix form that every backend loads natively.

Every constraint is read by Pyomo's own linear walker (``LinearRepnVisitor``, the one its
``LinearStandardFormCompiler`` runs on each row), rows of a Pyomo ``MatrixConstraint`` straight
from its CSR arrays; so all backends see exactly the same model, the one Pyomo's standard form
gives (``tests/test_backends.py`` checks that). Constraints and variables added to the Pyomo
model later (lazy uniqueness, cuts) are compiled on their own by
:meth:`ModelCompiler.update`, which returns only the new columns and rows, so a backend
session can extend the model it already holds instead of receiving everything again.
New variables may carry objective terms (the objective expression is then re-read; the
coefficients of existing columns must not change), and compiled rows can be dropped from a
later hand-off by deactivating their constraints (:meth:`ModelCompiler.active_form`).

Why this and not Pyomo's compiler or persistent interfaces alone: ``python
benchmarks/handoff.py --size cub`` (the full model: 1,000,608 columns, 998,761 rows, 3.0M
nonzeros; one process on 2 cores shared with other jobs, 1-minute load average 3.3 at the
start, 2.2 at the end; 1 Dec 2026), in seconds, ratio = build + hand-off over this module's::

    hand-off                                   build  compile   load  build+hand-off  ratio
    this module -> HiGHS session                11.3      8.1    0.6            19.9   1.00
    LinearStandardFormCompiler -> HiGHS         11.3      7.4    0.6            19.3   0.97
    this module -> Gurobi session               11.3      8.1    1.7            21.1   1.00
    LinearStandardFormCompiler -> Gurobi        11.3      7.4    1.5            20.2   0.96
    this module -> SCIP session                 11.3      8.1    6.3            25.7   1.00
    LinearStandardFormCompiler -> SCIP          11.3      7.4    6.0            24.7   0.96
    persistent HiGHS (pyomo.contrib.solver)     11.3        -   26.3            37.6   1.89
    persistent Gurobi (pyomo.contrib.solver)    11.3        -   54.2            65.5   3.10
    persistent SCIP (pyomo.contrib.solver)      11.3        -   >600            >611    >23

* Rows used to go through a walker of this module's own: 7.0 s against the standard form's
  9.8 s in one run of the same command (1.3x on hand-off, 1.1x on build + hand-off), short of
  the 2x that would pay for keeping it; so Pyomo's walker replaced it.
* ``LinearStandardFormCompiler`` compiles only a whole model (the cut loop and the lazy
  uniqueness rows would recompile all of it every round), drops declared columns that neither
  a row nor the objective uses yet (the cut model numbers its columns in advance), and in
  Pyomo 6.10.1 fails on ``MatrixConstraint`` blocks, as the persistent HiGHS interface does.
* The persistent interfaces grow a model but hand this one over 3-5.5x slower (HiGHS, Gurobi;
  1.9x and 3.1x with the common build) or not within 600 s (SCIP), one solver each, where the
  backends here share one matrix form.
* ``MatrixConstraint`` rows read from their CSR arrays take 0.4 s against 1.0 s through the
  walker (50,000 rows of 10 terms, measured once outside the benchmark).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyomo.environ as pyo
import scipy.sparse as sp
from pyomo.core.base.matrix_constraint import _MatrixConstraintData as MatrixRow
from pyomo.core.expr.numeric_expr import LinearExpression
from pyomo.repn.linear import LinearRepnVisitor

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


class _LinearReader:
    """Pyomo's linear walker (``LinearRepnVisitor``, the one its ``LinearStandardFormCompiler``
    runs on every row), one expression at a time, so that rows added later compile alone.
    Fixed variables and mutable parameters become constants, as in Pyomo's writers. One
    reader per compile: the walker takes a variable it has seen unfixed for a column even
    after it is fixed."""

    def __init__(self, compiler: ModelCompiler) -> None:
        self._visitor = LinearRepnVisitor({})
        self._vars = self._visitor.var_map  # id -> variable, filled while walking
        self._col = compiler._col  # id -> column; the walker's terms are keyed by id too
        self._column = compiler._column

    def terms(self, expr, cols: list, vals: list) -> float | None:
        """Append ``expr``'s linear terms to cols/vals; return its constant part (None, and
        nothing appended, when ``expr`` is not linear)."""
        repn = self._visitor.walk_expression(expr)
        if repn.nonlinear is not None:
            return None
        col, linear = self._col, repn.linear
        try:
            cols.extend([col[i] for i in linear])
        except KeyError:  # a variable without a column yet: give it one
            variables, column = self._vars, self._column
            cols.extend([col[i] if i in col else column(variables[i]) for i in linear])
        vals.extend(linear.values())
        return float(repn.constant)

    def row(self, con, cols: list, vals: list) -> tuple[float, float]:
        """Append one constraint's terms; return its (lo, hi) with the constant moved over."""
        if isinstance(con, MatrixRow):  # holds no expression: its parts are built on demand
            lo, body, hi = con.lower, con.body, con.upper
        else:
            lo, body, hi = con.to_bounded_expression(evaluate_bounds=True)
        shift = self.terms(body, cols, vals)
        if shift is None:
            raise QPMError(
                f"Constraint {con.name} is not linear.",
                "Presets must add linear constraints (linearise products with extra variables).",
            )
        return (-math.inf if lo is None else lo - shift), (math.inf if hi is None else hi - shift)


class ModelCompiler:
    """Keeps the column order of a model so later additions compile to a :class:`Delta`.

    Expressions are read by Pyomo's linear walker; rows of a ``MatrixConstraint`` straight
    from its CSR arrays. Fixed variables become constants, as in Pyomo's own writers.
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
        c0 = _LinearReader(self).terms(expr, obj_cols, obj_vals)
        if c0 is None:
            raise QPMError("The objective is not linear.", "Keep the model linear.")
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
        new_terms = LinearExpression(list(args[len(head):]))
        c0 = _LinearReader(self).terms(new_terms, cols, vals)
        if c0 is None:
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
        reader = _LinearReader(self)
        for con in self._unvisited(pyo.Constraint):
            key = id(con)
            if key in seen:
                continue
            seen.add(key)
            if isinstance(con, MatrixRow):  # rows of a Pyomo MatrixConstraint: read its arrays
                bounds = self._matrix_row(con, cols, vals)
                a, b = bounds if bounds is not None else reader.row(con, cols, vals)
            else:
                a, b = reader.row(con, cols, vals)
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
