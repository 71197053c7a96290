"""AssignmentProblem construction, the redundancy pairs, R' scaling and the tight tau rule."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest

from qpm.assignment.problem import AssignmentProblem
from qpm.assignment.redundancy import (
    default_tau,
    redundancy_pairs,
    scale_redundancy,
    tight_tau,
)
from qpm.errors import QPMError


def _arrays(F=6, C=3, seed=0):
    rng = np.random.default_rng(seed)
    A = rng.uniform(-0.2, 1.0, size=(F, C))
    R = np.triu(rng.uniform(0.0, 1.0, size=(F, F)), k=1)
    b = rng.uniform(0, 0.316, size=F)
    return A, R, b


@pytest.mark.parametrize("name", ["A", "R", "b"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_inputs_are_rejected(name, bad):
    A, R, b = _arrays()
    arrays = {"A": A, "R": R, "b": b}
    arrays[name] = arrays[name].copy()
    arrays[name].flat[1] = bad
    with pytest.raises(QPMError, match=f"{name} contains 1 NaN or infinite"):
        AssignmentProblem(**arrays, n_features=4, per_class=2)


def test_shape_mismatches_are_rejected():
    A, R, b = _arrays()
    with pytest.raises(QPMError, match="R has shape"):
        AssignmentProblem(A, R[:5, :5], b, n_features=4, per_class=2)
    with pytest.raises(QPMError, match="b has shape"):
        AssignmentProblem(A, R, b[:5], n_features=4, per_class=2)
    with pytest.raises(QPMError, match="non-empty 2-D"):
        AssignmentProblem(A[:, 0], n_features=4, per_class=2)
    with pytest.raises(QPMError, match="class_names has 2 entries"):
        AssignmentProblem(A, n_features=4, per_class=2, class_names=("a", "b"))


def test_size_errors():
    A, R, b = _arrays()
    with pytest.raises(QPMError, match="n_features=7 is larger than the 6"):
        AssignmentProblem(A, n_features=7, per_class=2)
    with pytest.raises(QPMError, match="per_class=5 is larger than n_features=4"):
        AssignmentProblem(A, n_features=4, per_class=5)
    # C(3, 3) = 1 distinct set but 3 classes: impossible with uniqueness ...
    with pytest.raises(QPMError, match=r"C\(3,3\) = 1"):
        AssignmentProblem(A, n_features=3, per_class=3)
    # ... and fine without it.
    p = AssignmentProblem(A, n_features=3, per_class=3, preset="unbalanced")
    assert p.n_features == 3
    with pytest.raises(QPMError, match="Unknown preset"):
        AssignmentProblem(A, n_features=3, per_class=1, preset="nope")
    # the old name of qpm-lazy says what happened to it
    with pytest.raises(QPMError, match="now called 'qpm-lazy'") as info:
        AssignmentProblem(A, n_features=3, per_class=1, preset="qpm-iterative")
    assert info.value.fix == "Use --preset qpm-lazy."


def test_default_tau_is_filled_in_and_objective_matches_formula():
    A, R, b = _arrays()
    p = AssignmentProblem(A, R, b, n_features=3, per_class=2)
    assert p.tau == pytest.approx(default_tau(R, 3, "paper")) and p.tau_rule == "paper"
    tight = AssignmentProblem(A, R, b, n_features=3, per_class=2, tau_rule="tight")
    assert tight.tau == pytest.approx(tight_tau(R, 3)) and tight.tau_rule == "tight"
    given = AssignmentProblem(A, R, b, n_features=3, per_class=2, tau=0.5, tau_rule="tight")
    assert given.tau == 0.5 and given.tau_rule == "fixed"
    with pytest.raises(QPMError, match="Unknown tau rule 'nope'"):
        AssignmentProblem(A, R, b, n_features=3, per_class=2, tau_rule="nope")
    sel = np.array([0, 2, 5])
    mask = np.zeros(6, dtype=bool)
    mask[sel] = True
    w = np.zeros((6, 3))
    w[[0, 2], 0] = w[[2, 5], 1] = w[[0, 5], 2] = 1
    positive = R[R > 0]
    lo, hi = positive.min(), positive.max()
    penalty = sum(
        (R[i, j] - lo) / (hi - lo) for i, j in combinations(sel, 2) if R[i, j] >= p.tau
    )
    expected = 1000 / (2 * 3) * (A * w).sum() + b[sel].sum() - penalty
    assert p.objective(mask, w) == pytest.approx(expected)


def test_redundancy_pairs_threshold_and_scaling():
    R = np.zeros((4, 4))
    R[0, 1], R[0, 2], R[1, 3], R[2, 3] = 0.2, 0.6, 1.0, 0.4
    pairs = redundancy_pairs(R, 0.4)
    triples = zip(pairs.i, pairs.j, pairs.weight, strict=True)
    got = {(int(i), int(j)): float(w) for i, j, w in triples}
    # R' = (R - 0.2) / (1.0 - 0.2) over the pairs with R >= 0.4
    assert got == pytest.approx({(0, 2): 0.5, (1, 3): 1.0, (2, 3): 0.25})
    # A symmetric R gives the same pairs as its upper triangle.
    sym = redundancy_pairs(R + R.T, 0.4)
    assert np.array_equal(sym.i, pairs.i) and np.allclose(sym.weight, pairs.weight)
    # Below the smallest positive value the penalty never becomes a reward.
    assert np.all(scale_redundancy(np.array([0.0, -0.5]), R) == 0)
    assert len(redundancy_pairs(R, 1.5)) == 0


def test_tight_tau_on_a_known_structure():
    # Features 0-2 are mutually redundant (0.9), 3-5 form another group (0.8), and across
    # the groups the similarity is 0.1. Candidates are 0.1, 0.8, 0.9 and just above 0.9.
    R = np.full((6, 6), 0.1)
    R[:3, :3] = 0.9
    R[3:, 3:] = 0.8
    R = np.triu(R, k=1)
    assert tight_tau(R, 1) == 0.1  # any single feature: the smallest candidate
    assert tight_tau(R, 2) == 0.8  # one per group; at 0.1 every pair conflicts
    assert tight_tau(R, 3) == 0.9  # needs two of the 0.8 group
    assert tight_tau(R, 4) == 0.9  # the whole 0.8 group plus one of the 0.9 group
    assert tight_tau(R, 5) == np.nextafter(0.9, 1)  # two of the 0.9 group: no conflicts left


def _exact_tau(R: np.ndarray, n: int) -> float:
    sym = np.maximum(R, R.T)
    F = R.shape[0]
    for t in np.unique(R[np.triu_indices(F, 1)]):
        for s in combinations(range(F), n):
            if all(sym[a, b] < t for a, b in combinations(s, 2)):
                return float(t)
    return float(np.nextafter(sym.max(), np.inf))


@pytest.mark.parametrize("seed", range(6))
def test_tight_tau_admits_a_set_and_is_near_the_exact_minimum(seed):
    rng = np.random.default_rng(seed)
    F, n = 9, 4
    R = np.triu(rng.uniform(0, 1, size=(F, F)), k=1)
    tau = tight_tau(R, n)
    sym = np.maximum(R, R.T)
    assert any(
        all(sym[a, b] < tau for a, b in combinations(s, 2)) for s in combinations(range(F), n)
    ), "the returned tau admits no set of n features"
    exact = _exact_tau(R, n)
    assert exact <= tau
    # The greedy is a heuristic, but on these it stays within a few candidate steps.
    values = np.unique(R[np.triu_indices(F, 1)])
    assert np.searchsorted(values, tau) - np.searchsorted(values, exact) <= 3


@pytest.mark.parametrize("A_scale, b_value, weight, words", [
    (1e308, 0.0, 1.0, "A (times 1000/(k*C)) reaches"),
    (1.0, 1e12, 1.0, "b reaches 1e+12"),
    (1.0, 0.0, 1e300, "the redundancy weight reaches 1e+300"),
    (1e-14, 0.0, 1.0, "below the solvers' tolerance"),
])
def test_extreme_scales_are_refused_with_the_scale_free_fix(A_scale, b_value, weight, words):
    rng = np.random.default_rng(0)
    A = rng.random((8, 3)) * A_scale
    with pytest.raises(QPMError) as info:
        AssignmentProblem(A=A, b=np.full(8, b_value), n_features=4, per_class=2,
                          redundancy_weight=weight)
    assert words in info.value.problem and "common factor" in info.value.fix
    AssignmentProblem(A=rng.random((8, 3)) * 1e3, b=np.full(8, 1e3), n_features=4, per_class=2)
