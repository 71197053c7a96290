"""Stage 3 of the cut loop: MIP re-solves of the grown relaxation on the chosen backend.

Each MIP answer is priced exactly from the arrays (its top-k sets, repaired to unique classes)
and offered as an incumbent. Classes whose ``theta`` exceeds their true value get a tight cut
at the integer point; when the top-k sets of two classes coincide (and the repair cannot avoid
it at no loss) those classes get explicit ``w_ic`` columns and a no-good "c and d do not both
use exactly S". The first answer that needs nothing is optimal; every bound is valid because
every model is a relaxation. The functions take the :class:`~.loop.CutSolver` (``cs``) whose
state they grow.
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np

from qpm.assignment.formulations import say
from qpm.assignment.repair import unique_columns
from qpm.assignment.status import Termination

log = logging.getLogger("qpm.solve.cuts")
_TOL = 1e-6


def collisions(W: np.ndarray) -> list[tuple[int, int, tuple[int, ...]]]:
    """Every pair of classes (c, d) with the same feature set S in ``W``, as (c, d, S)."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for c in range(W.shape[1]):
        groups.setdefault(tuple(np.flatnonzero(W[:, c]).tolist()), []).append(c)
    out = []
    for S, cls in groups.items():
        out.extend((c, d, S) for a, c in enumerate(cls) for d in cls[a + 1:])
    return out


def forbid(cs, c: int, d: int, S: tuple[int, ...]) -> bool:
    """No-good: classes c and d do not both use exactly the set S (False if known)."""
    key = (min(c, d), max(c, d), S)
    if key in cs.nogoods:
        return False
    cs.nogoods.add(key)
    for e in (c, d):
        if e not in cs.wcol:
            cs.explicit_class(e)
    S_arr = np.asarray(S, dtype=np.int64)
    idx = np.concatenate([cs.wcol[c] + S_arr, cs.wcol[d] + S_arr])
    cs.rel.add_rows([0, idx.size], idx, np.ones(idx.size), [-np.inf], [2 * cs.k - 1],
                    kind="nogood")
    return True


def _top_mask(cs, s: np.ndarray) -> np.ndarray:
    mask = np.zeros(cs.F, dtype=bool)
    mask[np.argsort(-s, kind="stable")[: cs.n]] = True
    return mask


def price(cs, x: np.ndarray) -> None:
    """Offer the assignment a MIP point stands for (its top-k sets, repaired to unique
    classes) as an incumbent, priced from the arrays."""
    mask = _top_mask(cs, x[: cs.F])
    W = unique_columns(cs.problem.A, np.flatnonzero(mask), cs.k) if cs.unique \
        else cs.tk.decode(mask)
    cs.best.offer(cs.problem, mask, W)


def examine(cs, x: np.ndarray, relaxed_value: float | None) -> bool:
    """Price a MIP answer, update the incumbent, add what it violates; True if exact."""
    F, C = cs.F, cs.C
    mask = _top_mask(cs, x[:F])
    theta = x[F:F + C].copy()
    true = cs.tk.values(mask)
    W = cs.tk.decode(mask)
    for c, first in cs.wcol.items():  # explicit classes report their own sets
        wc = x[first:first + F] > 0.5
        if wc.sum() == cs.k and not np.any(wc & ~mask):
            W[:, c] = wc
        true[c] = float(cs.problem.A[:, c] @ W[:, c])
    over = np.flatnonzero(theta > true + _TOL * np.maximum(1.0, np.abs(true)))
    plain = np.asarray([c for c in over if c not in cs.wcol], dtype=np.int64)
    if plain.size:
        cs.cut_at(mask.astype(np.float64), plain)
    value = -math.inf
    clashes = collisions(W) if cs.unique else []
    if not clashes:  # the answer's own assignment is feasible
        value = cs.best.offer(cs.problem, mask, W)
    if cs.unique:
        repaired = unique_columns(cs.problem.A, np.flatnonzero(mask), cs.k)
        value = max(value, cs.best.offer(cs.problem, mask, repaired))
    if over.size:
        return False
    if relaxed_value is not None and value >= relaxed_value - _TOL * max(1.0, abs(value)):
        return True  # the relaxation's answer is attained by a feasible assignment
    if clashes:
        added = [forbid(cs, c, d, S) for c, d, S in clashes]
        if any(added):
            return False
    # Nothing is violated (the answer differs from the incumbent only by tolerances).
    return True


def branch(cs, backend, deadline: float | None) -> Termination:
    """MIP rounds on ``backend`` until an answer needs nothing, the gap closes or time is up."""
    keep = None
    if cs.last_x is not None:
        # Cuts and clique rows slack at the final LP point (and no longer in the root LP)
        # only slow the branching down.
        keep = cs.rel.tight_rows(cs.last_x, live=cs.lp_live)
        keep[cs.lp_rows:] = True  # rows added after it (cuts at the incumbent, pairs)
        say(log, cs.opts.progress, f"MIP model keeps {int(keep.sum())} of {keep.size} rows")
    form = cs.rel.form(integral=True, keep=keep)
    t0 = time.perf_counter()
    session = backend.load(form)
    if cs.opts.trace is not None:
        # Solver bounds are valid; its solutions are priced and repaired like answers.
        session.on_bound = cs.opts.trace.bound
        session.on_solution = lambda x, _obj: price(cs, x)
    cs.times.handoff += time.perf_counter() - t0
    cursor = cs.rel.cursor()
    termination = Termination.TIME_LIMIT
    while True:
        remaining = None if deadline is None else deadline - time.perf_counter()
        if remaining is not None and remaining <= 0.5:
            break
        cs.rounds += 1
        t0 = time.perf_counter()
        cs.rel.sync(session, cursor, integral=True)
        cs.times.handoff += time.perf_counter() - t0
        start = cs.start_vector() if (cs.opts.warm_start and cs.best.mask is not None) else None
        out = session.solve(remaining, cs.opts.mip_gap, cs.opts.threads, start)
        cs.times.solve += out.solve_seconds
        if out.bound is not None:
            cs.bound = min(cs.bound, out.bound)
        if out.x is None:
            termination = out.termination
            cs.refused = out.message if termination is Termination.LICENCE_LIMIT else None
            break
        optimal = out.termination is Termination.OPTIMAL
        exact = examine(cs, out.x, out.objective)
        if not exact or not optimal:
            cs.polish(out.x[: cs.F], deadline)
        say(log, cs.opts.progress, f"MIP round {cs.rounds}: {out.termination.value}, "
            f"relaxation {out.objective:.4f}, bound {cs.bound:.4f}, incumbent "
            f"{cs.best.value:.4f}{'' if exact else ', adding violated rows'}")
        if cs.gap_closed() or (exact and optimal):
            termination = Termination.OPTIMAL
            break
        if exact:
            termination = out.termination
            break  # time is up and nothing to add
    session.close()
    return termination
