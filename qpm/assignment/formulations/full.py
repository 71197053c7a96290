"""The full formulation: the assignment problem as ONE backend-neutral Pyomo model, and its
solve loop.

Variables: ``s[i]`` (feature i selected), ``w[i, c]`` (feature i assigned to class c), both
binary; ``y[p]`` in [0, 1] for every redundancy pair p = (i, j) in P, with
``y[p] >= s[i] + s[j] - 1``. Because y is penalised with a non-negative weight, at an optimum
``y[p] = s[i] * s[j]`` exactly, so the product is linearised without changing the problem and
every backend gets the very same linear MIP.

Uniqueness of two classes c, d (both with exactly k features) is linearised with one
continuous ``z[i] >= w[i, c] + w[i, d] - 1`` per feature and ``sum_i z[i] <= k - 1``: the two
classes share at most k - 1 features, i.e. they differ. That is F variables and F + 1 rows
per class pair, so for all C(C, 2) pairs it is huge; the solve loop (:func:`solve`) adds it
lazily, only for pairs that came out identical (:func:`add_uniqueness`), which keeps the final
answer exactly the paper's problem.

The solve loop is exact for every preset: solve the model the preset built, and if the answer
breaks one of the preset's rules (a class without exactly k features, two identical classes),
add exactly those constraints and re-solve warm-started. Each model in the loop is a relaxation
of the preset's problem, so the first answer that breaks no rule is optimal for it and the last
bound is valid.

A forced pair of classes c, d (preset chiqpm) shares exactly k - 1 features
(``sum_i w[i, c] * w[i, d] = k - 1``; Gurobi would take the product natively, every backend
gets the same linear form here, :func:`add_forced_pairs`): one continuous ``e[i] >=
w[i, c] - w[i, d]`` per feature and ``sum_i e[i] <= 1``, i.e. c has at most one feature that
d lacks, so with k each they share at least k - 1; that they share no more (are not
identical) is the pairs' uniqueness, which the solve loop adds like any other when an answer
breaks it. F columns and F + 1 rows per pair; ``benchmarks/chiqpm_rows.py`` measured it
faster than the exact product form (u <= w[i, c], u <= w[i, d], u >= w[i, c] + w[i, d] - 1,
sum u = k - 1: F columns, 3F + 1 rows) and than this form with the pair's uniqueness rows up
front (see the README's CHiQPM section).

A preset's ``apply(model, problem)`` (:mod:`qpm.assignment.presets`) adds the per-class rules
to the model from :func:`build_base`; users can register their own (see
:func:`qpm.assignment.register_preset`). The components documented here (``s``, ``w``, ``y``,
sets ``F`` and ``C``) and the row builders :func:`add_per_class_exact`,
:func:`add_relaxed_budget`, :func:`add_uniqueness` and :func:`add_forced_pairs` are the stable
surface such a function may use.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pyomo.environ as pyo
from pyomo.core.expr.numeric_expr import LinearExpression, MonomialTermExpression
from pyomo.core.expr.relational_expr import InequalityExpression

from qpm.assignment.formulations import SolveOptions, say
from qpm.assignment.formulations.compile import ModelCompiler
from qpm.assignment.result import AssignmentResult, SolveTimes, answer_result
from qpm.assignment.status import Termination

log = logging.getLogger("qpm.solve")

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


def add_forced_pairs(m, problem, pairs) -> None:
    """Each class pair (c, d) of ``pairs`` shares at least k - 1 features (and, with the
    uniqueness the solve loop enforces, exactly k - 1; see above)."""
    F = problem.n_total
    m.forced = pyo.Block()
    m.forced_pairs = [(int(c), int(d)) for c, d in np.asarray(pairs).reshape(-1, 2).tolist()]
    for c, d in m.forced_pairs:
        blk = pyo.Block()
        m.forced.add_component(f"pair_{c}_{d}", blk)
        blk.e = pyo.Var(m.F, bounds=(0.0, 1.0))
        rows = [_row_ge(0.0, [e, _neg(m.w[i, c]), m.w[i, d]])
                for i, e in enumerate(blk.e.values())]
        blk.only_c = pyo.Constraint(m.F, rule=lambda b, i, rows=rows: rows[i])
        blk.one = pyo.Constraint(expr=_linear([1.0] * F, list(blk.e.values())) <= 1)


def forced_pair_size(problem) -> tuple[int, int]:
    """(columns, rows) :func:`add_forced_pairs` adds for ``problem``'s forced pairs."""
    P, F = len(problem.forced_pairs()), problem.n_total
    return P * F, P * (F + 1)


def build_model(problem) -> pyo.ConcreteModel:
    """The model of ``problem`` under its preset, ready for any backend."""
    m = build_base(problem)
    if problem.spec.apply is not None:
        problem.spec.apply(m, problem)
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
    for c, d in getattr(m, "forced_pairs", ()):
        only_c = W[:, c] & ~W[:, d]
        for i, v in m.forced.component(f"pair_{c}_{d}").e.items():
            v.set_value(float(only_c[i]), skip_validation=True)


def decode(m, problem) -> tuple[np.ndarray, np.ndarray]:
    """The selection (F,) bool and assignment (F, C) 0/1 array from the model's values."""
    F, C = problem.n_total, problem.n_classes
    s = np.array([(v.value or 0.0) > 0.5 for v in m.s.values()], dtype=bool)
    W = np.array([(v.value or 0.0) > 0.5 for v in m.w.values()], dtype=np.int8).reshape(F, C)
    return s, W


def violations(problem, selected, matrix) -> tuple[list[int], list[tuple[int, int]]]:
    """Classes whose size is not k, and class pairs with identical columns, under the rules of
    the problem's preset."""
    rules = problem.rules
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


# -- the solve loop -----------------------------------------------------------------------------


def full_size(problem) -> tuple[int, int]:
    """(variables, constraints) of the full model before any lazy rows: for licence checks."""
    F, C, P = problem.n_total, problem.n_classes, len(problem.pairs())
    cols, rows = forced_pair_size(problem)
    return F + F * C + P + cols, F * C + 1 + P + C + 1 + rows


def _feasible(form, x: np.ndarray, tol: float = 1e-6) -> bool:
    """Whether a full column vector satisfies every row and bound of a matrix form."""
    if not np.all(np.isfinite(x)):
        return False
    if np.any(x < form.col_lo - tol) or np.any(x > form.col_hi + tol):
        return False
    activity = form.A @ x
    return bool(np.all(activity >= form.row_lo - tol) and np.all(activity <= form.row_hi + tol))


def solve(problem, backend, opts: SolveOptions) -> AssignmentResult:
    """The straightforward Pyomo model through ``backend``, with the exact repair loop; the
    result is NOT verified (the facade does that)."""
    times = SolveTimes()
    if not backend.fits(*full_size(problem)):  # do not build a model the licence refuses
        why = backend.too_large(*full_size(problem))
        return answer_result(problem, backend.name, Termination.LICENCE_LIMIT, None, None,
                             times, why)
    t0 = time.perf_counter()
    m = build_model(problem)
    start = opts.start
    start_mask = None if start is None else start.mask
    if start is not None:
        set_start(m, problem, start_mask, start.matrix)
    times.build = time.perf_counter() - t0
    say(log, opts.progress, f"built the model in {times.build:.1f} s")

    t0 = time.perf_counter()
    compiler = ModelCompiler(m)
    form = compiler.form
    session = backend.load(form)
    _follow(session, compiler, m, problem, opts.trace)
    times.handoff = time.perf_counter() - t0
    say(log, opts.progress, f"{form.n_cols} variables, {form.n_rows} rows, handed over in "
        f"{times.handoff:.1f} s")
    if start is not None and not _feasible(form, form.start):
        # The heuristic knows the preset's rules, not the rows a user preset adds.
        say(log, opts.progress, "the heuristic start breaks a row of this preset; not used")
        start = start_mask = None
    vector = form.start if (start is not None and opts.warm_start) else None

    answer, termination, bound, message = None, Termination.TIME_LIMIT, None, ""
    rounds = 0
    while True:
        remaining = opts.remaining()
        if remaining is not None and remaining <= 0:
            break
        rounds += 1
        out = session.solve(remaining, opts.mip_gap, opts.threads, vector)
        times.solve += out.solve_seconds
        if out.bound is not None:
            bound = out.bound
        termination, message = out.termination, out.message
        if out.x is None:
            break
        compiler.store(out.x)
        s, W = decode(m, problem)
        bad, dup = violations(problem, s, W)
        if not bad and not dup:
            answer = (s, W)
            if opts.trace is not None:
                opts.trace.incumbent(problem.objective(s, W))
            break
        say(log, opts.progress, f"round {rounds}: {len(bad)} class(es) without k features, "
            f"{len(dup)} identical class pair(s); adding them and re-solving")
        t0 = time.perf_counter()
        add_uniqueness(m, problem, dup)
        add_per_class_exact(m, problem, bad)
        if start_mask is not None:
            set_start(m, problem, start_mask, start.matrix)
        delta = compiler.update()
        if delta.col_lo.size:
            session.add_columns(delta.col_lo, delta.col_hi, delta.integer, delta.c)
        if delta.row_lo.size:
            session.add_rows(delta.A, delta.row_lo, delta.row_hi)
        vector = compiler.current_start() if vector is not None else None
        times.handoff += time.perf_counter() - t0
        termination = Termination.TIME_LIMIT  # until a solve of the extended model says otherwise
    session.close()

    from_start = False
    if start is not None and termination not in (
            Termination.INFEASIBLE, Termination.ERROR, Termination.LICENCE_LIMIT):
        start_value = problem.objective(start_mask, start.matrix)
        worse = answer is not None and problem.objective(*answer) < start_value - 1e-9 * max(
            1.0, abs(start_value))
        if answer is None or worse:
            answer, from_start = (start_mask, np.asarray(start.matrix)), True
            message = "the warm start (no better solution that obeys every rule in time)"
    if termination is Termination.OPTIMAL and rounds > 1:
        message = f"exact after {rounds} rounds of adding violated constraints"
    return answer_result(problem, backend.name, termination, answer, bound, times, message,
                         from_start)


def _follow(session, compiler, m, problem, trace) -> None:
    """Record the solver's bounds, and its solutions that break no rule, into ``trace``."""
    if trace is None:
        return

    def solution(x: np.ndarray, _objective: float) -> None:
        compiler.store(x)
        s, W = decode(m, problem)
        bad, dup = violations(problem, s, W)
        if not bad and not dup:
            trace.incumbent(problem.objective(s, W))

    session.on_bound = trace.bound
    session.on_solution = solution
