"""The cut formulation: only ``s`` and one value per class, top-k cuts added in rounds.

Model (maximised)::

    scale * sum_c theta_c - penalty(s) + b . s     s.t.  sum_i s_i = n,  s binary,
    theta_c <= k*lam + sum_i max(A_ic - lam, 0) s_i      (top-k cuts, any lam)

with the penalty of :mod:`.penalty`. Every model along the way is a relaxation
of the preset's problem (fewer cuts, uniqueness not yet enforced), so each solver bound is a
valid upper bound; every MIP answer is priced exactly from the arrays and repaired into a
feasible assignment, which gives the incumbent. The loop stops when the certified gap
``(bound - incumbent) / |incumbent|`` is at most ``mip_gap``, or at the deadline.

The model is a Pyomo model (:class:`.relaxation.Relaxation`) compiled
incrementally by the same compiler as the full formulation, and every stage runs on the chosen
backend. Stages: (1) root: the LP relaxation with top-k cuts, lazy McCormick pairs
and clique rows until none is violated or the bound stalls; every LP optimum is a bound, and
each converged LP point is rounded and polished by the swap search for incumbents. (2) The
final LP support plus the incumbent get a y column for all their pairs, every other pair
goes into aggregated star rows, slack clique rows are dropped. (3) MIP re-solves on the
chosen backend, warm-started: classes whose theta exceeds their true value get a tight cut
at the integer point; when the top-k columns of two classes coincide (and the repair cannot
avoid it at no loss) those classes get explicit w_ic columns and a no-good "c and d do not
both use exactly S"; the first answer that needs nothing is optimal. Ties in A are harmless:
the repaired incumbent is compared by value, not by decoded sets. Branching is skipped when
too little time is left for the MIP to get through its own root.
"""

from __future__ import annotations

import functools
import logging
import math
import time

import numpy as np

from qpm.assignment.formulations import SolveOptions, say
from qpm.assignment.formulations.cuts import mip
from qpm.assignment.formulations.cuts.penalty import PairModel, separate_cliques
from qpm.assignment.formulations.cuts.relaxation import Relaxation
from qpm.assignment.formulations.cuts.separation import TopK
from qpm.assignment.heuristic import SwapSearch, heuristic_solution
from qpm.assignment.problem import AssignmentProblem
from qpm.assignment.repair import unique_columns
from qpm.assignment.result import AssignmentResult, SolveTimes, answer_result
from qpm.assignment.status import Termination
from qpm.errors import QPMError

# The root LP loop may use this share of the remaining time: on large instances its clique
# rounds lift the bound faster than branching does; it stops earlier once it stalls.
ROOT_SHARE = 0.85
# Branch only with time for at least this many root LP solves left.
MIP_MIN_LPS = 20
CLIQUES_PER_ROUND = 1000
# Rounding the root LP point + swap search: this many tries, within this share of the time.
POLISH_TRIES = 4
POLISH_SHARE = 0.05
# The root loop stops when three clique rounds together gain less than this (relative).
STALL = 2e-4
# Unless it is too late to branch: then the time left can only go to the bound or to
# incumbents, so on a stall the clique search widens (twice the cliques per round, WIDEN_SIZE
# more members each) and the loop goes on, at most WIDEN_STEPS times; the rest of the time
# goes to restarts of the swap search from the incumbent (:meth:`CutSolver.search`).
WIDEN_STEPS = 3
WIDEN_SIZE = 4
CLIQUE_SIZE = 12
# The incumbent search stops this long before the deadline (result assembly, verification).
SEARCH_MARGIN = 1.0
# Separate cliques in every root round (not only once the top-k cuts have caught up).
CLIQUES_ALWAYS = False
# A root round that lowers the LP value by less than this (relative) ends a catch-up phase.
CATCH_UP = 2e-5
# Every this many root rounds, cuts slack at the LP point leave the LP (0: never).
PURGE_EVERY = 1

log = logging.getLogger("qpm.solve.cuts")


class _Incumbent:
    """The best verified-feasible assignment seen so far (each improvement goes to ``trace``)."""

    def __init__(self, trace=None) -> None:
        self.mask: np.ndarray | None = None
        self.W: np.ndarray | None = None
        self.value = -math.inf
        self.trace = trace

    def offer(self, problem: AssignmentProblem, mask: np.ndarray, W: np.ndarray) -> float:
        value = problem.objective(mask, W)
        if value > self.value + 1e-9 * max(1.0, abs(value)):
            self.mask, self.W, self.value = mask.copy(), np.asarray(W, dtype=np.uint8), value
            if self.trace is not None:
                self.trace.incumbent(value)
        return value


class CutSolver:
    """State of one cut-formulation solve on ``backend``; :func:`solve` is the entry point."""

    def __init__(self, problem: AssignmentProblem, opts: SolveOptions, backend) -> None:
        if not problem.rules.per_class_exact:
            raise QPMError(
                f"The cut formulation needs exactly k features per class; preset "
                f"{problem.preset!r} uses a total budget.",
                "Use --formulation full (or auto) for this preset.",
            )
        self.backend = backend
        self.problem, self.opts, self.unique = problem, opts, problem.rules.unique_columns
        self.F, self.C = problem.A.shape
        self.n, self.k = problem.n_features, problem.per_class
        self.tk = TopK(problem.A, self.k)
        self.rel = Relaxation(self.F, self.C)
        p = problem.pairs()
        self.pairs = PairModel(self.rel, p.i, p.j, p.weight * problem.redundancy_weight, self.n)
        self.best = _Incumbent(opts.trace)
        self.bound = math.inf
        self.wcol: dict[int, int] = {}  # class -> first of its F explicit w columns
        self.nogoods: set[tuple[int, int, tuple[int, ...]]] = set()
        self.times = SolveTimes()
        self.rounds = 0
        self.last_x: np.ndarray | None = None
        self.lp_rows = 0  # rows the last root LP had
        self.lp_live: np.ndarray | None = None  # which of them it still held
        self.lp_seconds: list[float] = []
        self.root_cut_short = False  # the last root LP solve ran out of time
        self.widened = 0  # times the stalled root widened its clique search
        self.refused: str | None = None  # why the backend's licence refused the model

    # -- model ------------------------------------------------------------------------------
    def build(self) -> None:
        F, C, k = self.F, self.C, self.k
        top = np.sort(self.problem.A, axis=0)[::-1][:k].sum(axis=0)  # theta never exceeds it
        self.rel.add_cols(np.zeros(F), 1.0, True, self.problem.bias, kind="s")
        self.rel.add_cols(np.full(C, -np.inf), top, False, self.problem.scale, kind="theta")
        self.rel.add_rows([0, F], np.arange(F), np.ones(F), [self.n], [self.n], kind="budget")
        # Seed cuts at a few thresholds per class (the k-th .. 8k-th largest value).
        self.rel.add_cuts(self.tk.rank_cuts(np.unique([k, k + 1, 2 * k, 4 * k, 8 * k])))
        if self.best.mask is not None:
            self.cut_at(self.best.mask.astype(np.float64))

    def cut_at(self, s: np.ndarray, classes: np.ndarray | None = None) -> int:
        _, lam = self.tk.fill(s)
        cls = np.arange(self.C) if classes is None else np.asarray(classes, dtype=np.int64)
        self.rel.add_cuts(self.tk.cuts(cls, lam[cls]))
        return int(cls.size)

    # -- stage 1: root LP ---------------------------------------------------------------------
    def too_late_to_branch(self, final: float | None) -> bool:
        """True when less time is left than MIP_MIN_LPS root LP solves take."""
        if final is None or not self.lp_seconds:
            return False
        # A root LP solve cut short by the time limit says too little time is left, and its
        # short time would understate how long a solve takes: use the longest recent one.
        lp_time = float(max(self.lp_seconds[-5:]))
        return self.root_cut_short or final - time.perf_counter() < MIP_MIN_LPS * lp_time

    def root(self, deadline: float | None, final: float | None = None) -> np.ndarray:
        """The root cut loop until ``deadline``; past it, on until ``final`` (the overall
        deadline) when the time left would be too short to branch anyway."""
        F, C = self.F, self.C
        t0 = time.perf_counter()
        lp = self.backend.load(self.rel.form(integral=False))
        self.times.handoff += time.perf_counter() - t0
        cursor = self.rel.cursor()
        used = np.zeros(F, dtype=bool)
        value = math.inf
        history: list[float] = []
        seen = cursor.rows  # rows the LP has been solved with at least once
        previous = math.inf
        clique_limit, clique_size = CLIQUES_PER_ROUND, CLIQUE_SIZE
        for r in range(2000):
            if deadline is not None and time.perf_counter() > deadline:
                if final is None or deadline >= final or not self.too_late_to_branch(final):
                    break
                # Leave room for one more LP solve and the final polish.
                deadline = final - 2.0 * float(np.mean(self.lp_seconds[-5:])) - 1.0
                if time.perf_counter() > deadline:
                    break
            t0 = time.perf_counter()
            self.rel.sync(lp, cursor, integral=False)
            self.times.handoff += time.perf_counter() - t0
            self.lp_rows = cursor.rows
            self.lp_live = cursor.live.copy()
            out = lp.solve(None if deadline is None else max(1.0, deadline - time.perf_counter()),
                           threads=self.opts.threads)
            solved_with, seen = seen, cursor.rows
            self.times.solve += out.solve_seconds
            self.lp_seconds.append(out.solve_seconds)
            if out.x is None:
                say(log, self.opts.progress,
                    f"root LP stopped: {out.termination.value} {out.message}")
                self.root_cut_short = out.termination.stopped_early
                if out.termination is Termination.LICENCE_LIMIT:
                    self.refused = out.message
                break
            x = out.x
            self.last_x = x
            s, theta = x[:F], x[F:F + C]
            used = s > 1e-6  # the final support: pairs the LP never touched go to stars
            value = out.objective
            optimal = out.termination is Termination.OPTIMAL
            if optimal:  # an LP optimum of a relaxation bounds the problem
                self.bound = min(self.bound, value)
                if self.opts.trace is not None:
                    self.opts.trace.bound(value)
                if self.gap_closed():
                    break
            dropped = 0
            if PURGE_EVERY and r % PURGE_EVERY == PURGE_EVERY - 1:
                # Cuts slack at this point (and in the LP for a solve before it) leave the LP.
                dropped = self.rel.drop(lp, cursor, self.rel.slack_cuts(x, cursor, solved_with))
            cuts, _ = self.tk.separate(s, theta)
            self.rel.add_cuts(cuts)
            pairs = self.pairs.add_y(self.pairs.violated_pairs(x))
            cliques = 0
            # The top-k cuts have caught up with the LP point when few are left, or when the
            # last round moved the LP value by almost nothing (many classes, tiny changes).
            moved = previous - value if optimal else math.inf
            previous = value
            caught_up = (len(cuts) <= max(2, C // 20) or moved <= CATCH_UP * abs(value)) \
                and pairs <= max(2, C // 20)
            if CLIQUES_ALWAYS or caught_up:
                cliques = separate_cliques(self.pairs, x, clique_limit, clique_size)
            # Once the top-k cuts have (nearly) caught up with the LP point:
            if caught_up:
                # Each converged LP point is a good place to look for incumbents.
                self.polish(s, deadline)
                history.append(value)
                stalled = len(history) > 3 and history[-4] - value <= STALL * max(1.0, abs(value))
                if (cliques == 0 and len(cuts) == 0 and pairs == 0) or stalled:
                    if not (clique_limit > 0 and self.widened < WIDEN_STEPS
                            and self.too_late_to_branch(final)):
                        break
                    # Branching is out: a wider clique search may still lift the bound.
                    self.widened += 1
                    clique_limit, clique_size = 2 * clique_limit, clique_size + WIDEN_SIZE
                    history = [value]
                    say(log, self.opts.progress, f"root stalled at LP {value:.4f}, too late "
                        f"to branch: up to {clique_limit} cliques of <= {clique_size} per round")
            say(log, self.opts.progress, f"root round {r}: LP {value:.4f}, {len(cuts)} cuts, "
                 f"{pairs} pairs, {cliques} cliques, {dropped} dropped, "
                 f"{int(cursor.live.sum())} rows")
        lp.close()
        self.root_value = value
        return used

    # -- incumbents from relaxation points ----------------------------------------------------
    @functools.cached_property
    def polisher(self) -> SwapSearch:
        """The swap search of this problem, built once when first needed (its penalty matrix
        is the costly part), shared by polishing and the incumbent search."""
        return SwapSearch(self.problem)

    def polish(self, scores: np.ndarray, deadline: float | None, tries: int = 1) -> None:
        """Round a point (top n by score, then random roundings) and run the swap search."""
        rng = np.random.default_rng(self.rounds + tries)
        for t in range(tries):
            if deadline is not None and time.perf_counter() >= deadline:
                break
            noisy = scores if t == 0 else scores + 0.5 * rng.random(scores.size)
            sel = np.sort(np.argsort(-noisy, kind="stable")[: self.n])
            sel = self.polisher.improve(sel, deadline)
            mask = np.zeros(self.F, dtype=bool)
            mask[sel] = True
            W = self.tk.decode(mask) if not self.unique else unique_columns(
                self.problem.A, np.flatnonzero(mask), self.k)
            before = self.best.value
            self.best.offer(self.problem, mask, W)
            if self.best.value > before:
                say(log, self.opts.progress, f"polished incumbent {self.best.value:.4f}")

    def search(self, deadline: float | None) -> None:
        """Restarts of the swap search from the incumbent (perturb ~20% of its features,
        improve, keep the best) until ``deadline``: the use of time left after a root that
        ended too late to branch."""
        if deadline is None or self.best.mask is None:
            return
        left = deadline - time.perf_counter() - SEARCH_MARGIN
        if left <= 0 or self.n >= self.F:
            return
        before = self.best.value
        h = heuristic_solution(self.problem, restarts=1 << 30, seed=1 + self.rounds,
                               time_limit=left, initial=np.flatnonzero(self.best.mask),
                               swaps=self.polisher)
        self.best.offer(self.problem, h.mask, h.matrix)
        say(log, self.opts.progress, f"incumbent search: {h.restarts} restarts in "
            f"{h.seconds:.0f} s, incumbent {before:.4f} -> {self.best.value:.4f}")

    # -- the MIP stage's model (its loop: :mod:`.mip`) ------------------------------------------
    def start_vector(self) -> np.ndarray:
        x = np.zeros(self.rel.n_cols)
        mask, W = self.best.mask, self.best.W
        F, C = self.F, self.C
        x[:F] = mask
        theta = self.tk.values(mask)
        for c, first in self.wcol.items():
            x[first:first + F] = W[:, c]
            theta[c] = float(self.problem.A[:, c] @ W[:, c])
        x[F:F + C] = theta
        self.pairs.start_values(mask, x)
        return x

    def explicit_class(self, c: int) -> None:
        """w_ic columns for class c: w_ic <= s_i, sum_i w_ic = k, theta_c <= A_c . w_c."""
        F = self.F
        first = self.rel.add_cols(np.zeros(F), 1.0, True, 0.0, kind=f"w{c}")
        self.wcol[c] = first
        cols = first + np.arange(F)
        self.rel.add_fixed_width(np.stack([cols, np.arange(F)], 1),
                                 np.tile([1.0, -1.0], (F, 1)), -np.inf, 0.0, kind=f"w{c}_link")
        self.rel.add_rows([0, F], cols, np.ones(F), [self.k], [self.k], kind=f"w{c}_count")
        self.rel.add_rows([0, F + 1], np.concatenate([[F + c], cols]),
                          np.concatenate([[1.0], -self.problem.A[:, c]]), [-np.inf], [0.0],
                          kind=f"w{c}_value")

    def gap_closed(self) -> bool:
        if not math.isfinite(self.bound) or self.best.mask is None:
            return False
        # Solver bounds carry the solvers' own absolute tolerances (about 1e-6).
        slack = max(self.opts.mip_gap * abs(self.best.value), 1e-6)
        return self.bound - self.best.value <= slack


def solve(problem: AssignmentProblem, backend, opts: SolveOptions | None = None
          ) -> AssignmentResult:
    """Solve ``problem`` with the cut formulation on ``backend``; the result is NOT verified.

    ``opts`` (:class:`~qpm.assignment.formulations.SolveOptions`): ``start`` a feasible
    solution used as incumbent and warm start, ``deadline``/``time_limit`` the time budget,
    ``mip_gap`` the certified relative gap to stop at, ``threads`` solver threads,
    ``progress`` one line per round on stderr. The root LP and the MIP both run on
    ``backend``. The termination is ``optimal`` when the gap between the best bound and the
    returned (feasible) assignment is at most ``mip_gap``.
    """
    opts = opts or SolveOptions()
    if opts.deadline is None and opts.time_limit is not None:
        opts.deadline = time.perf_counter() + float(opts.time_limit)
    cs = CutSolver(problem, opts, backend)
    begin = time.perf_counter()
    if opts.start is not None:
        cs.best.offer(problem, opts.start.mask, opts.start.matrix)
    cs.build()
    cs.times.build = time.perf_counter() - begin
    root_deadline = None
    if opts.deadline is not None:
        root_deadline = time.perf_counter() + ROOT_SHARE * max(0.0, opts.remaining())
    used = cs.root(root_deadline, opts.deadline)
    if cs.refused is not None:  # the facade's fallback policy decides what happens now
        return answer_result(problem, backend.name, Termination.LICENCE_LIMIT, None, None,
                             cs.times, cs.refused)
    if cs.last_x is not None:
        limit = None if opts.deadline is None else time.perf_counter() + POLISH_SHARE * max(
            0.0, opts.remaining())
        cs.polish(cs.last_x[: cs.F], limit, tries=POLISH_TRIES)
    if cs.best.mask is not None:
        used |= cs.best.mask
        cs.cut_at(cs.best.mask.astype(np.float64))
    t0 = time.perf_counter()
    added, stars = cs.pairs.close(np.flatnonzero(used))
    cs.times.build += time.perf_counter() - t0
    say(log, opts.progress, f"root LP {cs.root_value:.4f}; candidates {int(used.sum())}, "
        f"{added} more y pairs, {stars} star rows; {cs.rel.n_cols} columns, "
        f"{cs.rel.n_rows} rows")
    # The root bound may already certify the incumbent; otherwise branch, unless the time
    # left is too short for the MIP to get through its own root (it would only overrun).
    if cs.gap_closed():
        termination = Termination.OPTIMAL
    elif cs.too_late_to_branch(opts.deadline):
        termination = Termination.TIME_LIMIT
        say(log, opts.progress,
            f"{opts.remaining():.0f} s left, too little to branch on this model")
        cs.search(opts.deadline)
    else:
        termination = mip.branch(cs, backend, opts.deadline)
    if cs.refused is not None or cs.best.mask is None:
        return answer_result(problem, backend.name, termination, None, None, cs.times,
                             cs.refused or "")
    if cs.gap_closed():
        termination = Termination.OPTIMAL  # the gap is certified
    bound = cs.bound if math.isfinite(cs.bound) else None
    if bound is not None and bound < cs.best.value:
        bound = cs.best.value  # solver tolerances: the bound can dip just below the optimum
    return answer_result(
        problem, backend.name, termination, (cs.best.mask, cs.best.W), bound, cs.times,
        f"cut formulation: root LP {cs.root_value:.6g}, {cs.rounds} MIP round(s), "
        f"{len(cs.wcol)} class(es) with explicit uniqueness")
