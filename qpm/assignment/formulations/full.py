"""The assignment problem as ONE backend-neutral Pyomo model, plus the built-in presets.

Variables: ``s[i]`` (feature i selected), ``w[i, c]`` (feature i assigned to class c), both
binary; ``y[p]`` in [0, 1] for every redundancy pair p = (i, j) in P, with
``y[p] >= s[i] + s[j] - 1``. Because y is penalised with a non-negative weight, at an optimum
``y[p] = s[i] * s[j]`` exactly, so the product is linearised without changing the problem and
every backend gets the very same linear MIP.

Uniqueness of two classes c, d (both with exactly k features) is linearised with one
continuous ``z[i] >= w[i, c] + w[i, d] - 1`` per feature and ``sum_i z[i] <= k - 1``: the two
classes share at most k - 1 features, i.e. they differ. That is F variables and F + 1 rows
per class pair, so for all C(C, 2) pairs it is huge; the solve loop in
:mod:`qpm.assignment.solving` adds it lazily, only for pairs that came out identical
(:func:`add_uniqueness`), which keeps the final answer exactly the paper's problem.

A preset's ``apply(model, problem)`` adds the per-class rules to the model from
:func:`build_base`; users can register their own (see :func:`qpm.assignment.register_preset`).
The components documented here (``s``, ``w``, ``y``, sets ``F`` and ``C``) are the stable
surface such a function may use.
"""

from __future__ import annotations

from math import comb

import numpy as np
import pyomo.environ as pyo
from pyomo.core.expr.numeric_expr import LinearExpression, MonomialTermExpression
from pyomo.core.expr.relational_expr import InequalityExpression

from qpm.assignment.presets import Rules, get_preset, register_preset

# Add uniqueness for every class pair up front when it costs at most this many z variables;
# above it the solve loop adds it lazily, only for pairs that collide.
UNIQUE_UPFRONT_LIMIT = 1_000


def _linear(coefs, variables, constant: float = 0.0) -> LinearExpression:
    # Building the sum in one go keeps construction linear in its length (no += chains).
    args = [MonomialTermExpression((float(a), v)) for a, v in zip(coefs, variables, strict=True)]
    if constant:
        args.append(float(constant))
    return LinearExpression(args)


def _neg(v) -> MonomialTermExpression:
    return MonomialTermExpression((-1.0, v))


def _row_le(terms: list, rhs: float) -> InequalityExpression:
    """``sum(terms) <= rhs`` from a list of variables and monomials."""
    return InequalityExpression((LinearExpression(terms), rhs), False)


def _row_ge(lhs: float, terms: list) -> InequalityExpression:
    """``lhs <= sum(terms)``."""
    return InequalityExpression((lhs, LinearExpression(terms)), False)


def build_base(problem) -> pyo.ConcreteModel:
    """Variables, objective, the links ``w <= s``, ``sum s = n`` and the redundancy pairs."""
    F, C = problem.n_total, problem.n_classes
    m = pyo.ConcreteModel(name="qpm_assignment")
    m.qpm_problem = problem  # a plain attribute: lets the greedy backend read the arrays
    m.F = pyo.RangeSet(0, F - 1)
    m.C = pyo.RangeSet(0, C - 1)
    m.s = pyo.Var(m.F, domain=pyo.Binary)
    m.w = pyo.Var(m.F, m.C, domain=pyo.Binary)
    pairs = problem.pairs()
    m.P = pyo.RangeSet(0, len(pairs) - 1)
    m.y = pyo.Var(m.P, bounds=(0.0, 1.0))
    m.pair_i = pairs.i
    m.pair_j = pairs.j

    s, w, y = m.s, m.w, m.y
    # w is stored row-major over (i, c), the order of A.ravel().
    coefs = (problem.scale * problem.A).ravel().tolist() + problem.bias.tolist()
    coefs += (-problem.redundancy_weight * pairs.weight).tolist()
    m.obj = pyo.Objective(
        expr=_linear(coefs, list(w.values()) + list(s.values()) + list(y.values())),
        sense=pyo.maximize,
    )

    # Flat integer indices, prefetched variable lists and expressions built by their
    # constructors (no operator overloading): several times faster than rules over (i, c)
    # tuples, both to build and to compile.
    sd, wd, yd = list(s.values()), list(w.values()), list(y.values())
    m.FC = pyo.RangeSet(0, F * C - 1)  # link row r is (i, c) = divmod(r, C)
    link = [_row_le([wd[r], _neg(sd[r // C])], 0.0) for r in range(F * C)]
    m.link = pyo.Constraint(m.FC, rule=lambda m, r: link[r])
    m.n_selected = pyo.Constraint(expr=_linear([1.0] * F, sd) == problem.n_features)
    pairs_rows = [
        _row_ge(-1.0, [yd[p], _neg(sd[i]), _neg(sd[j])])
        for p, (i, j) in enumerate(zip(pairs.i.tolist(), pairs.j.tolist(), strict=True))
    ]
    m.pair_link = pyo.Constraint(m.P, rule=lambda m, p: pairs_rows[p])
    m.exact_classes = set()  # classes with sum_i w[i, c] == k in the model
    m.unique_pairs = set()  # class pairs (c, d) with the uniqueness rows in the model
    m.unique = pyo.Block()  # holds the uniqueness rows, added pair by pair
    return m


def _class_sum(m, c: int) -> LinearExpression:
    F = len(m.F)
    return _linear([1.0] * F, [m.w[i, c] for i in range(F)])


def add_per_class_exact(m, problem, classes=None) -> list[int]:
    """Add ``sum_i w[i, c] == k`` for the given classes (all by default); returns the new ones."""
    classes = range(problem.n_classes) if classes is None else classes
    new = [int(c) for c in classes if int(c) not in m.exact_classes]
    if not hasattr(m, "per_class"):
        m.per_class = pyo.ConstraintList()
    for c in new:
        m.per_class.add(_class_sum(m, c) == problem.per_class)
        m.exact_classes.add(c)
    return new


def add_relaxed_budget(m, problem, total: str = "<=") -> None:
    """``sum w <= C*k`` (or ``== C*k``) and at least one feature per class."""
    F, C, k = problem.n_total, problem.n_classes, problem.per_class
    everything = _linear([1.0] * (F * C), [m.w[i, c] for i in range(F) for c in range(C)])
    budget = (everything == C * k) if total == "==" else (everything <= C * k)
    m.budget = pyo.Constraint(expr=budget)
    m.at_least_one = pyo.Constraint(m.C, rule=lambda m, c: _class_sum(m, c) >= 1)


def add_uniqueness(m, problem, class_pairs) -> list[tuple[int, int]]:
    """Forbid identical columns for each class pair (c, d); returns the pairs newly added.

    Also makes both classes exactly k, which the ``sum z <= k - 1`` form relies on.
    """
    F, k = problem.n_total, problem.per_class
    new = []
    for c, d in class_pairs:
        c, d = (int(c), int(d)) if c < d else (int(d), int(c))
        if (c, d) in m.unique_pairs or c == d:
            continue
        add_per_class_exact(m, problem, (c, d))
        blk = pyo.Block()
        m.unique.add_component(f"pair_{c}_{d}", blk)
        blk.z = pyo.Var(m.F, bounds=(0.0, 1.0))
        rows = [
            _row_ge(-1.0, [z, _neg(m.w[i, c]), _neg(m.w[i, d])])
            for i, z in enumerate(blk.z.values())
        ]
        blk.both = pyo.Constraint(m.F, rule=lambda b, i, rows=rows: rows[i])
        blk.share = pyo.Constraint(expr=_linear([1.0] * F, list(blk.z.values())) <= k - 1)
        m.unique_pairs.add((c, d))
        new.append((c, d))
    return new


def build_model(problem, relax_per_class: bool = False, preset: str | None = None):
    """The model of ``problem`` under its preset (or ``preset``), ready for any backend.

    ``relax_per_class=True`` replaces the preset's constraints by the relaxed start of the
    iterative flow (total ``<= C*k``, at least one per class).
    """
    m = build_base(problem)
    if relax_per_class:
        add_relaxed_budget(m, problem, "<=")
        return m
    p = get_preset(preset or problem.preset)
    if p.apply is not None:
        p.apply(m, problem)
    return m


# -- warm starts and decoding -------------------------------------------------------------------


def set_start(m, problem, selected: np.ndarray, matrix: np.ndarray) -> None:
    """Give every variable the value implied by a 0/1 selection and assignment."""
    s = np.asarray(selected, dtype=bool)
    W = np.asarray(matrix, dtype=bool)
    for i, v in m.s.items():
        v.set_value(float(s[i]), skip_validation=True)
    flat = W.ravel()
    for (i, c), v in m.w.items():
        v.set_value(float(flat[i * W.shape[1] + c]), skip_validation=True)
    both = s[m.pair_i] & s[m.pair_j]
    for p, v in m.y.items():
        v.set_value(float(both[p]), skip_validation=True)
    for c, d in m.unique_pairs:
        blk = m.unique.component(f"pair_{c}_{d}")
        shared = W[:, c] & W[:, d]
        for i, v in blk.z.items():
            v.set_value(float(shared[i]), skip_validation=True)


def decode(m, problem) -> tuple[np.ndarray, np.ndarray]:
    """The selection (F,) bool and assignment (F, C) 0/1 array from the model's values."""
    F, C = problem.n_total, problem.n_classes
    s = np.array([(v.value or 0.0) > 0.5 for v in m.s.values()], dtype=bool)
    W = np.array([(v.value or 0.0) > 0.5 for v in m.w.values()], dtype=np.int8).reshape(F, C)
    return s, W


def violations(problem, rules: Rules, selected, matrix) -> tuple[list[int], list[tuple[int, int]]]:
    """Classes whose size is not k, and class pairs with identical columns, under ``rules``."""
    W = np.asarray(matrix, dtype=bool)
    bad_classes: list[int] = []
    if rules.per_class_exact:
        bad_classes = np.flatnonzero(W.sum(axis=0) != problem.per_class).tolist()
    dup: list[tuple[int, int]] = []
    if rules.unique_columns:
        groups: dict[bytes, list[int]] = {}
        for c in range(W.shape[1]):
            groups.setdefault(np.packbits(W[:, c]).tobytes(), []).append(c)
        for members in groups.values():
            dup += [(a, b) for x, a in enumerate(members) for b in members[x + 1 :]]
    return bad_classes, dup


# -- built-in presets ---------------------------------------------------------------------------


def apply_qpm(m, problem) -> None:
    """k per class for every class; uniqueness for all class pairs when that is small."""
    add_per_class_exact(m, problem)
    C, F = problem.n_classes, problem.n_total
    if comb(C, 2) * F <= UNIQUE_UPFRONT_LIMIT:
        add_uniqueness(m, problem, [(c, d) for c in range(C) for d in range(c + 1, C)])


def apply_iterative(m, problem) -> None:
    """The lazy flow's start: total ``<= C*k`` and at least one per class, nothing else."""
    add_relaxed_budget(m, problem, "<=")


def apply_unbalanced(m, problem) -> None:
    """Total exactly ``C*k``, at least one per class, no uniqueness."""
    add_relaxed_budget(m, problem, "==")


def _register_builtin() -> None:
    for name, apply in (
        ("qpm", apply_qpm),
        ("qpm-full", apply_qpm),  # as qpm; solve.py keeps it on the straightforward model
        ("qpm-lazy", apply_iterative),
        ("unbalanced", apply_unbalanced),
        ("no-redundancy", apply_qpm),  # the pairs P are empty under this preset's rules
    ):
        old = get_preset(name)
        if old.apply is None:
            register_preset(name, apply, old.rules, old.description, old.flow)


_register_builtin()
