"""The redundancy penalty in the cut formulation: lazy McCormick pairs, cliques, stars.

``weight * sum_{(i,j) in P} R'_ij s_i s_j`` is modelled three ways, all exact at 0/1 points:

* ``y_ij >= s_i + s_j - 1`` (cost ``-weight R'_ij``) for pairs added when the LP violates
  them, and for every pair inside the candidate set K before the MIP;
* clique inequalities ``alpha * s(Q) - y(Q) <= alpha (alpha + 1) / 2`` for cliques Q of P
  (triangles with alpha = 1 among them), separated at the LP point: the McCormick rows alone
  let the LP spread s to 1/2 and pay nothing; the clique rows are what lifts the bound
  (cub: root LP 138.2 with McCormick only, about 128 with cliques, optimum near 127);
* one aggregated "star" row per feature for the pairs without a y column:
  ``z_i >= sum_j w_ij s_j - U_i (1 - s_i)`` with ``U_i`` the largest value the sum can
  take (n partners), so a MIP solution is always priced exactly without 600k y columns.
"""

from __future__ import annotations

import math

import numpy as np

from qpm.assignment.formulations.cuts.relaxation import Relaxation


class PairModel:
    """Which pairs have a y column, and the rows that model the penalty."""

    def __init__(self, rel: Relaxation, pi: np.ndarray, pj: np.ndarray, pw: np.ndarray,
                 n: int) -> None:
        self.rel, self.pi, self.pj, self.pw, self.n = rel, pi, pj, pw, int(n)
        F = rel.F
        self.pid = np.full((F, F), -1, dtype=np.int32)
        self.pid[pi, pj] = np.arange(pi.size, dtype=np.int32)
        self.pid[pj, pi] = np.arange(pi.size, dtype=np.int32)
        self.ycol = np.full(pi.size, -1, dtype=np.int64)
        self.star_cols: np.ndarray = np.zeros(0, dtype=np.int64)
        self.star_of = np.full(pi.size, -1, dtype=np.int64)  # pair -> star owner feature
        self.star_feats: np.ndarray = np.zeros(0, dtype=np.int64)
        self.star_cap: np.ndarray = np.zeros(0)

    def __len__(self) -> int:
        return int(self.pi.size)

    def add_y(self, pairs: np.ndarray) -> int:
        """Give the pairs a y column and McCormick row (pairs already modelled are skipped)."""
        pairs = np.unique(np.asarray(pairs, dtype=np.int64))
        pairs = pairs[(self.ycol[pairs] < 0) & (self.star_of[pairs] < 0)]
        m = pairs.size
        if m == 0:
            return 0
        first = self.rel.add_cols(np.zeros(m), np.inf, False, -self.pw[pairs], kind="y")
        self.ycol[pairs] = first + np.arange(m)
        idx = np.stack([self.pi[pairs], self.pj[pairs], self.ycol[pairs]], axis=1)
        self.rel.add_fixed_width(idx, np.tile([1.0, 1.0, -1.0], (m, 1)), -np.inf, 1.0,
                                  kind="pair")
        return m

    def y_values(self, x: np.ndarray, pairs: np.ndarray) -> np.ndarray:
        col = self.ycol[pairs]
        # Columns added after x was solved for are 0 there (the LP had no such variable yet).
        known = (col >= 0) & (col < x.size)
        return np.where(known, x[np.where(known, col, 0)], 0.0)

    def violated_pairs(self, x: np.ndarray, tol: float = 1e-7) -> np.ndarray:
        """Pairs without a y column whose McCormick row the LP point violates."""
        s = x[: self.rel.F]
        v = np.flatnonzero((self.ycol < 0) & (s[self.pi] + s[self.pj] > 1.0 + tol))
        return v

    def close(self, candidates: np.ndarray) -> tuple[int, int]:
        """y for every pair inside ``candidates``; stars for all pairs still without y.

        Each remaining pair is owned by an endpoint outside the candidates (the lower index
        when both are outside); after this every pair is modelled exactly once.
        """
        inside = np.zeros(self.rel.F, dtype=bool)
        inside[candidates] = True
        both = inside[self.pi] & inside[self.pj]
        added = self.add_y(np.flatnonzero(both & (self.ycol < 0)))
        rest = np.flatnonzero(self.ycol < 0)
        if rest.size == 0:
            return added, 0
        owner = np.where(~inside[self.pi[rest]], self.pi[rest], self.pj[rest])
        other = np.where(owner == self.pi[rest], self.pj[rest], self.pi[rest])
        self.star_of[rest] = owner
        order = np.argsort(owner, kind="stable")
        owner, other, wts = owner[order], other[order], self.pw[rest][order]
        feats, starts, counts = np.unique(owner, return_index=True, return_counts=True)
        # U_i bounds the sum over every feasible s: with s_i = 0 all n selected features may
        # be partners, so it is the sum of the n largest weights.
        cap = np.empty(feats.size)
        for t, (a, c) in enumerate(zip(starts, counts, strict=True)):
            w = wts[a:a + c]
            cap[t] = w.sum() if c <= self.n else np.partition(w, c - self.n)[c - self.n:].sum()
        m = feats.size
        first = self.rel.add_cols(np.zeros(m), np.inf, False, -1.0, kind="z")
        zc = first + np.arange(m)
        # row: sum_j w_ij s_j + U_i s_i - z_i <= U_i
        indptr = np.concatenate([[0], np.cumsum(counts + 2)])
        idx = np.empty(indptr[-1], dtype=np.int64)
        val = np.empty(indptr[-1])
        body = np.arange(owner.size) + np.repeat(indptr[:-1] - starts, counts)
        idx[body], val[body] = other, wts
        idx[indptr[1:] - 2], val[indptr[1:] - 2] = feats, cap
        idx[indptr[1:] - 1], val[indptr[1:] - 1] = zc, -1.0
        self.rel.add_rows(indptr, idx, val, np.full(m, -np.inf), cap, kind="star")
        self.star_cols, self.star_feats, self.star_cap = zc, feats, cap
        return added, m

    def start_values(self, mask: np.ndarray, x: np.ndarray) -> None:
        """Fill the y and z entries of a start vector ``x`` for the 0/1 selection ``mask``."""
        have = self.ycol >= 0
        x[self.ycol[have]] = (mask[self.pi[have]] & mask[self.pj[have]]).astype(np.float64)
        if self.star_cols.size:
            rest = np.flatnonzero(self.star_of >= 0)
            other = np.where(self.star_of[rest] == self.pi[rest], self.pj[rest], self.pi[rest])
            contrib = np.where(mask[self.star_of[rest]] & mask[other], self.pw[rest], 0.0)
            per = np.bincount(np.searchsorted(self.star_feats, self.star_of[rest]),
                              weights=contrib, minlength=self.star_feats.size)
            x[self.star_cols] = per


def _best_alpha(sigma: float) -> tuple[int, float]:
    """The integer alpha >= 1 maximising alpha*sigma - alpha*(alpha+1)/2, and that value."""
    a = max(1, int(math.floor(sigma)))
    best = max((a0 * sigma - a0 * (a0 + 1) / 2.0, a0) for a0 in (a - 1, a, a + 1) if a0 >= 1)
    return best[1], best[0]


def separate_cliques(model: PairModel, x: np.ndarray, limit: int = 500, max_size: int = 12,
                     tol: float = 1e-6, seeds: int = 4) -> int:
    """Clique rows ``alpha * s(Q) - y(Q) <= alpha (alpha + 1) / 2`` for cliques Q of P.

    Valid because m selected features of a clique form m(m-1)/2 pairs and
    ``alpha*m - m(m-1)/2 <= alpha(alpha+1)/2`` for all integers m, alpha. Greedy search: from
    every support feature and each of its ``seeds`` best neighbours, grow a clique by the
    neighbour with the largest ``s_u - y(u, Q)`` and keep the most violated prefix.
    """
    F = model.rel.F
    s = x[:F]
    sup = np.flatnonzero(s > 1e-6)
    if sup.size < 3 or len(model) == 0:
        return 0
    sub = model.pid[np.ix_(sup, sup)]
    adj = sub >= 0
    Y = np.where(adj, model.y_values(x, np.maximum(sub, 0)), 0.0)
    sv = s[sup]
    found: dict[tuple[int, ...], tuple[float, int]] = {}

    def grow(Q: list[int], cand: np.ndarray, sigma: float, ysum: float,
             to_q: np.ndarray) -> None:
        best = (tol, None, 0)
        while cand.any() and len(Q) < max_size:
            gain = np.where(cand, sv - to_q, -np.inf)
            u = int(np.argmax(gain))
            ysum += float(to_q[u])
            sigma += float(sv[u])
            Q.append(u)
            cand = cand & adj[u]
            cand[u] = False
            to_q = to_q + Y[u]
            alpha, lhs = _best_alpha(sigma)
            if lhs - ysum > best[0]:
                best = (lhs - ysum, tuple(sorted(Q)), alpha)
        if best[1] is not None and best[1] not in found:
            found[best[1]] = (best[0], best[2])

    for v in np.argsort(-sv, kind="stable"):
        # Several cliques per seed: force each of its best few neighbours in second place.
        nb = np.flatnonzero(adj[v])
        nb = nb[np.argsort(-(sv[nb] - Y[v, nb]), kind="stable")[:seeds]]
        for u in nb:
            cand = adj[v] & adj[u]
            cand[[v, u]] = False
            grow([int(v), int(u)], cand, float(sv[v] + sv[u]), float(Y[v, u]), Y[v] + Y[u])
    if not found:
        return 0
    chosen = sorted(found.items(), key=lambda kv: -kv[1][0])[:limit]
    indptr, idx, val, hi = [0], [], [], []
    for Q, (_, alpha) in chosen:
        q = np.asarray(Q)
        a, b = np.triu_indices(q.size, 1)
        pairs = sub[q[a], q[b]].astype(np.int64)
        if np.any(model.star_of[pairs] >= 0):
            continue
        model.add_y(pairs)
        idx.extend(sup[q].tolist())
        val.extend([float(alpha)] * q.size)
        idx.extend(model.ycol[pairs].tolist())
        val.extend([-1.0] * pairs.size)
        indptr.append(len(idx))
        hi.append(alpha * (alpha + 1) / 2.0)
    if not hi:
        return 0
    model.rel.add_rows(indptr, idx, val, np.full(len(hi), -np.inf), hi, optional=True,
                       kind="clique")
    return len(hi)
