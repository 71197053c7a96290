"""The routes to a stronger bound, measured against each other (issue 22): which could close
the gap on the dense-redundancy instances, and what each costs.

    OMP_NUM_THREADS=1 python benchmarks/bound_routes.py --size cub --family lowrank \
        --time-limit 600 --routes lp,mixture,inner
    OMP_NUM_THREADS=1 python benchmarks/bound_routes.py --size medium --family lowrank \
        --time-limit 120 --routes lp,mixture,inner,sdp,psd

Each route runs in its own process (its time and peak memory are its own) and prints one line:

* ``lp``: the cut formulation's root LP (``qpm bound --method lp``): the bound to beat.
* ``mixture``: the best bound ANY relaxation of the redundancy term alone can give, combined
  with the exact top-k relaxation (the QCR/SDP convexification, PSD cuts and the Lagrangian
  decomposition over the features all are such relaxations): the optimum over probability
  distributions of selections of ``T(E s) + b.E s - E pen(S)``, where ``T`` is the top-k
  relaxation. It is solved by column generation (a master LP over selections, new selections
  priced by swap search); the master value is a LOWER estimate of that best bound (the
  pricing is a heuristic), so the routes 1-3 cannot certify below it. Its dual multipliers
  give the Lagrangian decomposition's inner problem ``max_{|S|=n} d.1_S - pen(S)``.
* ``inner``: that inner problem at the mixture's multipliers, bounded by the LP with McCormick
  and clique rows (the cut loop on a one-class problem whose value is d.1_S): the Lagrangian
  bound ``const + inner bound`` is what route 3 certifies with the relaxation we have.
* ``sdp``: the same inner problem bounded by the Shor SDP (``X >= s s^T``, ``diag X = s``,
  ``X 1 = n s``, McCormick and ``X >= 0`` on the pairs; ``--dnn``: ``X >= 0`` everywhere) with
  cvxpy + SCS: the best the QCR convexification with a per-feature diagonal can give (its
  optimal diagonal is this SDP's dual). Only for ``F <= --sdp-max`` (an SCS iteration
  factorises the (F+1)^2 matrix).
* ``psdcuts``: the ``lp`` root loop (run until it stalls) with those PSD cuts added in every
  clique round, against the same loop without them (``lp`` without a time limit).
* ``psd``: at the ``lp`` root point, the PSD cuts ``v^T [1 s^T; s Y] v >= 0`` on every set
  whose pairs all carry y columns (the cliques of the last LP) and the triangle inequalities
  ``y_ij + y_ik - y_jk <= s_i``: the largest violation (0: no such cut moves the bound).
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qpm.assignment.cache import load_similarities  # noqa: E402
from qpm.assignment.heuristic import _penalty_matrix, heuristic_solution  # noqa: E402
from qpm.assignment.problem import AssignmentProblem  # noqa: E402
from qpm.assignment.synthetic import FAMILIES, SIZES, make_instance  # noqa: E402

ROUTES = ("lp", "mixture", "inner", "sdp", "psd", "psdcuts")


# -- the mixture bound (column generation) ---------------------------------------------------
def _local_search(d: np.ndarray, W: np.ndarray, S: np.ndarray) -> np.ndarray:
    """Best-improvement 1-swaps for max d.1_S - pen(S), |S| fixed."""
    S = np.array(S)
    inside = np.zeros(d.size, dtype=bool)
    inside[S] = True
    while True:
        WS = W[:, S].sum(axis=1)
        gain_out = -d[S] + WS[S]
        gain_in = np.where(inside, -np.inf, d - WS)
        D = gain_out[:, None] + gain_in[None, :] + W[S]
        a, j = np.unravel_index(int(np.argmax(D)), D.shape)
        if D[a, j] <= 1e-9:
            return np.sort(S)
        inside[S[a]], inside[j] = False, True
        S[a] = j


def _greedy(d: np.ndarray, W: np.ndarray, n: int) -> np.ndarray:
    chosen, pen = [], np.zeros(d.size)
    taken = np.zeros(d.size, dtype=bool)
    for _ in range(n):
        g = np.where(taken, -np.inf, d - pen)
        f = int(np.argmax(g))
        chosen.append(f)
        taken[f] = True
        pen += W[:, f]
    return np.array(chosen)


def mixture(problem: AssignmentProblem, start: np.ndarray, seconds: float, log=print) -> dict:
    """Column generation for max_D T(E s) + b.E s - E pen; returns the master value, the
    multipliers (d, const) and the master's support."""
    from scipy import sparse
    from scipy.optimize import linprog

    from qpm.assignment.formulations.cuts.separation import TopK

    F, C = problem.A.shape
    n, k, scale, b = problem.n_features, problem.per_class, problem.scale, problem.bias
    W = _penalty_matrix(problem)
    W = np.zeros((F, F)) if W is None else W
    tk = TopK(problem.A, k)
    cols = [np.sort(start)]
    seed = tk.rank_cuts(np.array([k, 2 * k, 4 * k]))
    cut_cls, cut_lam = seed.cls, seed.lam
    rng = np.random.default_rng(0)
    deadline = time.perf_counter() + seconds
    out: dict = {}
    for it in range(10_000):
        while True:  # the master with enough top-k cuts at its point
            m = len(cols)
            member = np.zeros((F, m))
            for j, S in enumerate(cols):
                member[S, j] = 1.0
            coef = np.maximum(problem.A[:, cut_cls] - cut_lam[None, :], 0.0)
            A_ub = sparse.hstack([sparse.csr_matrix((np.ones(cut_cls.size),
                                                     (np.arange(cut_cls.size), cut_cls)),
                                                    shape=(cut_cls.size, C)),
                                  sparse.csr_matrix(-(coef.T @ member))]).tocsr()
            value = np.array([b[S].sum() - 0.5 * W[np.ix_(S, S)].sum() for S in cols])
            res = linprog(-np.concatenate([np.full(C, scale), value]), A_ub=A_ub,
                          b_ub=k * cut_lam, A_eq=np.concatenate([np.zeros(C), np.ones(m)])[None],
                          b_eq=[1.0], bounds=[(None, None)] * C + [(0, None)] * m,
                          method="highs")
            s = member @ res.x[C:]
            cuts, _ = tk.separate(s, res.x[:C])
            if len(cuts) == 0:
                break
            cut_cls = np.concatenate([cut_cls, cuts.cls])
            cut_lam = np.concatenate([cut_lam, cuts.lam])
        y = -res.ineqlin.marginals
        sigma = -res.eqlin.marginals[0]
        d = b + coef @ y
        out = {"value": -res.fun, "d": d, "const": float(k * cut_lam @ y), "sigma": sigma,
               "support": int((s > 1e-6).sum()), "columns": m}
        starts = [_greedy(d, W, n), cols[int(np.argmax(res.x[C:]))]]
        starts += [rng.choice(F, n, replace=False) for _ in range(2)]
        best = max(((d[S].sum() - 0.5 * W[np.ix_(S, S)].sum() - sigma, tuple(S))
                    for S in (_local_search(d, W, x) for x in starts)), key=lambda t: t[0])
        if best[0] <= 1e-6:  # try harder: perturbed columns of the master's support
            used = np.flatnonzero(res.x[C:] > 1e-9)
            for _ in range(20):
                base = cols[int(rng.choice(used))].copy()
                swap = rng.choice(n, max(1, n // 4), replace=False)
                base[swap] = rng.choice(np.setdiff1d(np.arange(F), base), swap.size,
                                        replace=False)
                S = _local_search(d, W, base)
                rc = d[S].sum() - 0.5 * W[np.ix_(S, S)].sum() - sigma
                if rc > best[0]:
                    best = (rc, tuple(S))
        if it % 10 == 0:
            log(f"     mixture round {it}: master {out['value']:.4f}, {m} selections, "
                f"{out['support']} features, best reduced value {best[0]:.4f}")
        if best[0] <= 1e-6 or time.perf_counter() > deadline:
            out["converged"] = best[0] <= 1e-6
            return out
        cols.append(np.sort(np.asarray(best[1])))
    return out


def inner_problem(problem: AssignmentProblem, d: np.ndarray) -> AssignmentProblem:
    """``max_{|S|=n} d.1_S - pen(S)`` as a one-class assignment problem (k = n, so the class
    uses every selected feature and its value is sum_S d)."""
    n = problem.n_features
    return AssignmentProblem(A=(d * n / 1000.0)[:, None], R=problem.R, b=None, n_features=n,
                             per_class=n, tau=problem.tau,
                             redundancy_weight=problem.redundancy_weight)


def shor_sdp(problem: AssignmentProblem, d: np.ndarray, dnn: bool, seconds: float) -> float:
    import cvxpy as cp

    F, n = problem.n_total, problem.n_features
    p = problem.pairs()
    Z = cp.Variable((F + 1, F + 1), PSD=True)
    s, X = Z[0, 1:], Z[1:, 1:]
    Xp = X[p.i, p.j]
    cons = [Z[0, 0] == 1, cp.diag(X) == s, cp.sum(s) == n, cp.sum(X, axis=1) == n * s,
            Xp >= 0, Xp >= s[p.i] + s[p.j] - 1]
    if dnn:
        cons.append(X >= 0)
    prob = cp.Problem(cp.Maximize(d @ s - problem.redundancy_weight * (p.weight @ Xp)), cons)
    prob.solve(solver=cp.SCS, eps=1e-4, max_iters=100_000, time_limit_secs=seconds)
    return float(prob.value)


# -- route 2: PSD cuts and triangles at the root LP point ---------------------------------
def psd_violation(problem: AssignmentProblem, seconds: float) -> tuple[float, float, int]:
    """(most negative eigenvalue of [1 s; s Y] over the last LP's cliques, largest triangle
    violation, cliques looked at), at the root LP point."""
    from qpm.assignment.backends import get_backend
    from qpm.assignment.bounds.root import _RootOnly
    from qpm.assignment.formulations import SolveOptions

    opts = SolveOptions(time_limit=seconds, threads=1)
    opts.deadline = time.perf_counter() + seconds
    cs = _RootOnly(problem, opts, get_backend("highs"))
    cs.build()
    cs.root(opts.deadline, opts.deadline)
    x, F, pm = cs.last_x, problem.n_total, cs.pairs
    compiler = cs.rel.compile()
    A = compiler.form.A.tocsr()
    worst, looked = 0.0, 0
    for r, con in enumerate(compiler.row_constraints):
        if not con.parent_component().name.startswith("clique_"):
            continue
        cols = A.indices[A.indptr[r]:A.indptr[r + 1]]
        members = cols[cols < F]
        s = x[members]
        Y = np.diag(s)
        for a in range(members.size):
            for c in range(a + 1, members.size):
                Y[a, c] = Y[c, a] = pm.y_values(x, np.array([pm.pid[members[a], members[c]]]))[0]
        M = np.block([[np.ones((1, 1)), s[None, :]], [s[:, None], Y]])
        worst = min(worst, float(np.linalg.eigvalsh(M)[0]))
        looked += 1
    have = np.flatnonzero(pm.ycol >= 0)
    yv = np.zeros((F, F))
    yv[pm.pi[have], pm.pj[have]] = yv[pm.pj[have], pm.pi[have]] = pm.y_values(x, have)
    known = np.zeros((F, F), dtype=bool)
    known[pm.pi[have], pm.pj[have]] = known[pm.pj[have], pm.pi[have]] = True
    tri = 0.0
    sup = np.flatnonzero(known.any(axis=1))
    for i in sup:  # y_ij + y_ik - y_jk <= s_i over triangles with three y columns
        nb = np.flatnonzero(known[i])
        if nb.size < 2:
            continue
        sub = known[np.ix_(nb, nb)]
        lhs = yv[i, nb][:, None] + yv[i, nb][None, :] - yv[np.ix_(nb, nb)]
        tri = max(tri, float(np.max(np.where(sub, lhs, -np.inf)) - x[i]))
    return worst, tri, looked


def psd_cuts_bound(problem: AssignmentProblem, seconds: float) -> tuple[float, int]:
    """(the root LP bound, PSD rows added) when every clique separation round also adds the
    eigenvector cut ``v^T [1 s^T; s Y] v >= 0`` of each clique whose matrix is not PSD."""
    from qpm.assignment.backends import get_backend
    from qpm.assignment.bounds.root import _RootOnly
    from qpm.assignment.formulations import SolveOptions
    from qpm.assignment.formulations.cuts import loop

    F = problem.n_total
    cliques: list[np.ndarray] = []
    added = [0]
    original = loop.separate_cliques

    def with_psd(pm, x, *args, **kwargs):
        before = pm.rel.n_rows
        found = original(pm, x, *args, **kwargs)
        form = pm.rel.compile().form
        for r in range(before, form.n_rows):  # the clique rows just added
            cols = form.A.indices[form.A.indptr[r]:form.A.indptr[r + 1]]
            cliques.append(cols[cols < F])
        indptr, idx, val, lo = [0], [], [], []
        s_all = x[:F]
        for members in cliques:
            pid = pm.pid[np.ix_(members, members)].astype(np.int64)
            a, b = np.triu_indices(members.size, 1)
            if np.any(pm.ycol[pid[a, b]] < 0) or np.any(pm.ycol[pid[a, b]] >= x.size):
                continue
            s = s_all[members]
            Y = np.diag(s)
            Y[a, b] = Y[b, a] = x[pm.ycol[pid[a, b]]]
            M = np.block([[np.ones((1, 1)), s[None, :]], [s[:, None], Y]])
            w, V = np.linalg.eigh(M)
            if w[0] >= -1e-7:
                continue
            v = V[:, 0]
            v0, vs = v[0], v[1:]
            # -(sum_i (2 v0 v_i + v_i^2) s_i + sum_{i<j} 2 v_i v_j y_ij) <= v0^2
            idx.extend(members.tolist() + pm.ycol[pid[a, b]].tolist())
            val.extend((-(2 * v0 * vs + vs ** 2)).tolist() + (-2 * vs[a] * vs[b]).tolist())
            indptr.append(len(idx))
            lo.append(v0 * v0)
        if lo:
            pm.rel.add_rows(indptr, idx, val, np.full(len(lo), -np.inf), lo, optional=True,
                            kind="psd")
            added[0] += len(lo)
        return found + len(lo)

    loop.separate_cliques = with_psd
    opts = SolveOptions(time_limit=seconds, threads=1)
    opts.deadline = time.perf_counter() + seconds
    cs = _RootOnly(problem, opts, get_backend("highs"))
    cs.build()
    cs.root(opts.deadline, None)
    return cs.bound, added[0]


# -- one route per process -------------------------------------------------------------------
def _child(conn, route: str, problem: AssignmentProblem, args, start, mix) -> None:
    t0 = time.perf_counter()
    try:
        if route == "lp":
            from qpm.assignment.bounds import upper_bound

            result = {"bound": upper_bound(problem, "lp", time_limit=args.time_limit,
                                           threads=1).value}
        elif route == "mixture":
            result = mixture(problem, start, args.time_limit)
        elif route == "inner":
            from qpm.assignment.bounds import upper_bound

            q = inner_problem(problem, mix["d"])
            result = {"inner": upper_bound(q, "lp", time_limit=args.time_limit,
                                           threads=1).value}
        elif route == "sdp":
            result = {"inner": shor_sdp(problem, mix["d"], args.dnn, args.time_limit)}
        elif route == "psdcuts":
            result = dict(zip(("bound", "rows"), psd_cuts_bound(problem, args.time_limit),
                              strict=True))
        else:
            result = dict(zip(("eig", "triangle", "cliques"),
                              psd_violation(problem, args.time_limit), strict=True))
    except Exception as exc:  # a failing route is a finding
        result = {"error": f"{type(exc).__name__}: {exc}"}
    result["seconds"] = time.perf_counter() - t0
    result["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    conn.send(result)


def run_route(route: str, problem, args, start, mix=None) -> dict:
    ctx = mp.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(send, route, problem, args, start, mix))
    proc.start()
    out = recv.recv()
    proc.join()
    return out


def load(args) -> tuple[str, AssignmentProblem]:
    if args.instance:
        sims = load_similarities(args.instance)
        rec = sims.settings
        return args.instance, sims.problem(n_features=rec.get("n_features", 50),
                                           per_class=rec.get("per_class", 5))
    return (f"family={args.family} size={args.size} seed={args.seed}",
            make_instance(args.size, seed=args.seed, family=args.family))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="medium", choices=sorted(SIZES))
    p.add_argument("--family", default="lowrank", choices=FAMILIES)
    p.add_argument("--instance", help="a SIMS.npz instead of a generated instance")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--time-limit", type=float, default=300.0, help="seconds per route")
    p.add_argument("--routes", default="lp,mixture,inner")
    p.add_argument("--incumbent", type=float, help="best known objective, if better")
    p.add_argument("--sdp-max", type=int, default=600, help="largest F for the SDP route")
    p.add_argument("--dnn", action="store_true", help="SDP route: X >= 0 on every entry")
    args = p.parse_args(argv)
    routes = [r for r in args.routes.split(",") if r]
    name, problem = load(args)
    print(f"{name}: F={problem.n_total} C={problem.n_classes} n={problem.n_features} "
          f"k={problem.per_class} tau={problem.tau:.4g} ({len(problem.pairs())} pairs)",
          flush=True)
    h = heuristic_solution(problem, restarts=1000, patience=10, time_limit=60)
    best = max(h.objective, args.incumbent or -math.inf)
    print(f"  best known objective {best:.4f} (heuristic {h.objective:.4f})", flush=True)

    def line(label: str, value: float | None, r: dict, note: str = "") -> None:
        above = None if value is None else 100 * (value - best) / abs(best)
        shown = "-" if value is None else f"{value:10.4f}  {above:7.3f} %"
        print(f"  {label:<46} {shown}  {r['seconds']:7.1f} s  {r['peak_mb']:7.0f} MB  {note}",
              flush=True)

    mix = None
    for route in routes:
        if route not in ROUTES:
            raise SystemExit(f"unknown route {route!r}; choose from {', '.join(ROUTES)}")
        if route in ("inner", "sdp") and mix is None:
            raise SystemExit(f"route {route} needs the mixture route before it")
        if route == "sdp" and problem.n_total > args.sdp_max:
            print(f"  sdp: F={problem.n_total} > --sdp-max {args.sdp_max}: not run", flush=True)
            continue
        r = run_route(route, problem, args, h.selected, mix)
        if "error" in r:
            line(route, None, r, r["error"])
        elif route == "lp":
            line("lp: root LP (top-k, McCormick, cliques)", r["bound"], r)
        elif route == "mixture":
            mix = r
            line("mixture: best any penalty relaxation can do >=", r["value"], r,
                 f"{r['columns']} selections over {r['support']} features"
                 + ("" if r.get("converged") else ", not converged"))
            print(f"     its inner problem: optimum >= {r['sigma']:.4f} (Lagrangian "
                  f"constant {r['const']:.4f})", flush=True)
        elif route == "inner":
            line("inner LP+cliques at those multipliers", mix["const"] + r["inner"], r,
                 f"inner {r['inner']:.4f} vs >= {mix['sigma']:.4f}")
        elif route == "sdp":
            line(f"inner {'DNN' if args.dnn else 'Shor'} SDP at those multipliers",
                 mix["const"] + r["inner"], r, f"inner {r['inner']:.4f}")
        elif route == "psdcuts":
            line("psdcuts: root LP + PSD cuts on its cliques", r["bound"], r,
                 f"{r['rows']} PSD rows")
        else:
            line("psd: violations at the root LP point", None, r,
                 f"min eigenvalue {r['eig']:.2e} over {r['cliques']} cliques, triangle "
                 f"violation {r['triangle']:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
