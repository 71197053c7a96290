"""Compile a linear Pyomo model into one sparse matrix form that every backend loads natively.

The bulk of the model goes through Pyomo's own ``LinearStandardFormCompiler`` (vectorised,
seconds at 500k variables), so all backends see exactly the same matrix. Constraints and
variables added to the Pyomo model later (lazy uniqueness, cuts) are compiled on their own by
:meth:`ModelCompiler.update`, which returns only the new columns and rows, so a backend
session can extend the model it already holds instead of receiving everything again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pyomo.environ as pyo
import scipy.sparse as sp
from pyomo.repn.plugins.standard_form import LinearStandardFormCompiler
from pyomo.repn.standard_repn import generate_standard_repn

from qpm.errors import QPMError


@dataclass
class MatrixForm:
    """``max/min c @ x + c0`` s.t. ``row_lo <= A @ x <= row_hi``, ``col_lo <= x <= col_hi``.

    ``integer[j]`` marks integer columns, ``columns[j]`` is the Pyomo variable of column j and
    ``start[j]`` its current value (NaN when it has none), used as a warm start.
    """

    c: np.ndarray
    c0: float
    maximize: bool
    A: sp.csr_array
    row_lo: np.ndarray
    row_hi: np.ndarray
    col_lo: np.ndarray
    col_hi: np.ndarray
    integer: np.ndarray
    columns: list = field(repr=False)
    start: np.ndarray = field(repr=False)

    @property
    def n_cols(self) -> int:
        return int(self.c.size)

    @property
    def n_rows(self) -> int:
        return int(self.row_lo.size)


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

    @property
    def empty(self) -> bool:
        return self.col_lo.size == 0 and self.row_lo.size == 0


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


def _check_linear(model) -> None:
    for con in model.component_data_objects(pyo.Constraint, active=True, descend_into=True):
        if con.body.polynomial_degree() not in (0, 1):
            raise QPMError(
                f"Constraint {con.name} is not linear.",
                "Presets must add linear constraints (linearise products with extra variables).",
            )


class ModelCompiler:
    """Keeps the column order of a model so later additions compile to a :class:`Delta`."""

    def __init__(self, model) -> None:
        self.model = model
        objectives = list(model.component_data_objects(pyo.Objective, active=True))
        if len(objectives) != 1:
            raise QPMError(
                f"The model has {len(objectives)} active objectives; exactly one is needed.",
                "Deactivate the extra objectives in the preset.",
            )
        try:
            info = LinearStandardFormCompiler().write(model, mixed_form=True, set_sense=None)
        except (ValueError, RuntimeError) as exc:  # nonlinear parts are rejected there
            _check_linear(model)
            raise QPMError(f"The model cannot be compiled: {exc}", "Keep it linear.") from exc
        columns = list(info.columns)
        lo, hi, integer, start = _column_data(columns)
        c = np.asarray(info.c.toarray()).ravel() if info.c.shape[0] else np.zeros(len(columns))
        if c.size != len(columns):
            c = np.resize(c, len(columns))
        rhs = np.asarray(info.rhs, dtype=np.float64)
        kind = np.fromiter((r.bound_type for r in info.rows), dtype=np.int8, count=len(info.rows))
        row_lo = np.where(kind <= 0, rhs, -math.inf)
        row_hi = np.where(kind >= 0, rhs, math.inf)
        self.form = MatrixForm(
            c=c,
            c0=float(info.c_offset[0]) if len(info.c_offset) else 0.0,
            maximize=objectives[0].sense == pyo.maximize,
            A=sp.csr_array(info.A),
            row_lo=row_lo,
            row_hi=row_hi,
            col_lo=lo,
            col_hi=hi,
            integer=integer,
            columns=columns,
            start=start,
        )
        self._col = {id(v): j for j, v in enumerate(columns)}
        self._rows = {id(r.constraint) for r in info.rows}
        self._rows.update(
            id(con)
            for con in model.component_data_objects(pyo.Constraint, active=True, descend_into=True)
            if con.body.polynomial_degree() == 0
        )

    def update(self) -> Delta:
        """Compile the constraints (and their new variables) added since the last call."""
        form = self.form
        new_vars: list = []
        data, idx, ptr, lo, hi = [], [], [0], [], []
        for con in self.model.component_data_objects(
            pyo.Constraint, active=True, descend_into=True
        ):
            if id(con) in self._rows:
                continue
            self._rows.add(id(con))
            repn = generate_standard_repn(con.body, compute_values=True, quadratic=False)
            if not repn.is_linear():
                raise QPMError(f"Constraint {con.name} is not linear.", "Keep presets linear.")
            if not repn.linear_vars:
                continue
            for v, a in zip(repn.linear_vars, repn.linear_coefs, strict=True):
                j = self._col.get(id(v))
                if j is None:
                    j = self._col[id(v)] = form.n_cols + len(new_vars)
                    new_vars.append(v)
                idx.append(j)
                data.append(float(a))
            ptr.append(len(idx))
            shift = float(repn.constant)
            lo.append(-math.inf if con.lower is None else pyo.value(con.lower) - shift)
            hi.append(math.inf if con.upper is None else pyo.value(con.upper) - shift)
        n_total = form.n_cols + len(new_vars)
        A = sp.csr_array(
            (np.asarray(data), np.asarray(idx, dtype=np.int64), np.asarray(ptr, dtype=np.int64)),
            shape=(len(lo), n_total),
        )
        clo, chi, integer, start = _column_data(new_vars)
        delta = Delta(
            clo, chi, integer, np.zeros(len(new_vars)), start, A, np.array(lo), np.array(hi)
        )
        # Keep the form the single source of truth for the column order.
        form.columns.extend(new_vars)
        for name in ("col_lo", "col_hi", "integer", "c", "start"):
            setattr(form, name, np.concatenate([getattr(form, name), getattr(delta, name)]))
        form.A = sp.csr_array(sp.vstack([_widen(form.A, n_total), A], format="csr"))
        form.row_lo = np.concatenate([form.row_lo, delta.row_lo])
        form.row_hi = np.concatenate([form.row_hi, delta.row_hi])
        return delta

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
