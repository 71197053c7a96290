"""The two clique heuristics of the reference's tau search, on dense boolean adjacency arrays.

Both answer "can n mutually non-redundant features still be found?" without an exact
clique search:

- :func:`greedy_clique_size` is the large-clique heuristic of Pattabiraman et al. (2015)
  (as in networkx's ``large_clique_size``) with the reference's early stop at the target;
- :func:`clique_removal_independent_size` is the clique-removal approximation of Boppana and
  Halldorsson (1992) (networkx's ``clique_removal`` on Ramsey's R2 recursion), run on the
  graph of redundant pairs, where an independent set is a set of non-redundant features.

Which clique a heuristic finds depends on the order it visits nodes in, and networkx visits
them in Python set and dict order; both functions follow that order, so they find what the
reference finds (checked against its published pair counts in the tests). Adjacency arrays
are symmetric with a False diagonal.
"""

from __future__ import annotations

import numpy as np


def greedy_clique_size(adjacent: np.ndarray, target: int) -> int:
    """Size of a large clique found greedily; returns as soon as one reaches ``target``.

    For every vertex u of degree >= target (in index order), grow a clique from u's
    neighbours of degree >= target by repeatedly taking the candidate of highest degree and
    keeping only its neighbours whose degree is at least the best size found before this
    chain started. The answer is the largest size reached, so it may exceed ``target``.
    Candidates are Python sets filled in index order, as networkx's are, so equal degrees
    are broken in the same (set) order.
    """
    adjacent = np.asarray(adjacent, dtype=bool)
    degree_arr = adjacent.sum(axis=1)
    degree = degree_arr.tolist()
    eligible = degree_arr >= target
    best = 0
    for u in np.flatnonzero(eligible).tolist():
        candidates = set(np.flatnonzero(adjacent[u] & eligible).tolist())
        keep = degree_arr >= best  # fixed for the whole chain, as in the original recursion
        size = 1
        while candidates:
            w = max(candidates, key=degree.__getitem__)
            candidates.remove(w)
            candidates &= set(np.flatnonzero(adjacent[w] & keep).tolist())
            size += 1
        best = max(best, size)
        if best >= target:
            break
    return best


def _ramsey(neighbours: list[set[int]], order: list[int]) -> tuple[list[int], int]:
    """Ramsey's R2 recursion on the subgraph ``order``: (a clique, the size of an independent set).

    For the first node v: recurse on v's neighbours (v joins their clique) and on its
    non-neighbours (v joins their independent set); keep the larger of each, the neighbours'
    side on ties. Which node comes first decides which clique is found, so the subgraphs'
    node orders follow networkx's ``G.subgraph(nodes).copy()``: the order of the Python set of
    the nodes when they are fewer than half of the graph's (the non-neighbours' set formed as
    networkx forms it, a dict-keys difference), else the graph's own order. A node's
    neighbours are taken in the graph's node order. An explicit stack replaces the recursion,
    so F levels are fine.
    """
    results: list[tuple[list[int], int]] = []
    stack: list[tuple[bool, object]] = [(False, order)]
    while stack:
        combine, item = stack.pop()
        if combine:
            v = item
            clique_out, iset_out = results.pop()
            clique_in, iset_in = results.pop()
            clique = clique_in + [v] if len(clique_in) + 1 >= len(clique_out) else clique_out
            results.append((clique, max(iset_in, iset_out + 1)))
            continue
        nodes: list[int] = item
        if len(nodes) <= 1:  # a leaf: no recursion needed
            results.append((list(nodes), len(nodes)))
            continue
        v = nodes[0]
        linked = neighbours[v]
        inside = list(filter(linked.__contains__, nodes))
        n_out = len(nodes) - 1 - len(inside)
        if 2 * len(inside) < len(nodes):
            inside = list(set(iter(inside)))
        if 2 * n_out < len(nodes):
            members = dict.fromkeys(nodes).keys() - dict.fromkeys(inside).keys() - {v}
            outside = list(set(iter(members)))
        else:
            outside = [x for x in nodes[1:] if x not in linked]
        stack.append((True, v))
        stack.append((False, outside))  # popped second
        stack.append((False, inside))  # popped first
    return results[0]


def clique_removal_independent_size(conflict: np.ndarray, target: int) -> int:
    """Largest independent set found by repeatedly removing Ramsey cliques (stops at target)."""
    conflict = np.asarray(conflict, dtype=bool)
    neighbours = [set(np.flatnonzero(row).tolist()) for row in conflict]
    alive = list(range(conflict.shape[0]))
    best = 0
    while alive:
        clique, iset_size = _ramsey(neighbours, alive)
        best = max(best, iset_size)
        if best >= target:
            break
        removed = set(clique)
        alive = [x for x in alive if x not in removed]
    return best
