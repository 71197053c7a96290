"""The assignment problem: similarity arrays plus the sizes, validated on construction.

Objective (maximised), as in the QPM paper::

    (1000 / (k*C)) * sum_ic A_ic w_ic  -  weight * sum_{(i,j) in P} R'_ij s_i s_j  +  sum_i b_i s_i

with ``P`` the pairs i<j whose ``R_ij >= tau`` and ``R'`` = R min-max scaled over its
positive entries. Without a given tau, the named ``tau_rule`` picks it
(:mod:`qpm.assignment.redundancy`; default ``paper``, the reference implementation's search).
Constraints depend on the preset (see :mod:`qpm.assignment.presets`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import comb

import numpy as np

from qpm.assignment.forced_pairs import DEFAULT_RHO, check_request, check_rho, closest_pairs
from qpm.assignment.presets import Preset, Rules, get_preset
from qpm.assignment.redundancy import Pairs, check_tau_rule, default_tau, redundancy_pairs
from qpm.errors import QPMError


def _finite(name: str, x: np.ndarray) -> None:
    if not np.all(np.isfinite(x)):
        bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
        raise QPMError(
            f"{name} contains {bad} NaN or infinite value(s).",
            "Recompute the similarities from finite features "
            "(check for dead or exploding features).",
        )


# Objective coefficients the solvers handle exactly: HiGHS reads 1e20 as infinity and every
# solver loses the small terms next to huge ones. The optimum does not change when A, b and
# the redundancy weight are divided by one common factor, so the fix is always that.
MAX_COEFFICIENT = 1e9
MIN_COEFFICIENT = 1e-9


def _check_scale(A: np.ndarray, b: np.ndarray | None, weight: float, scale: float) -> None:
    terms = {"A (times 1000/(k*C))": float(np.abs(A).max()) * scale,
             "b": 0.0 if b is None else float(np.abs(b).max()),
             "the redundancy weight": weight}
    fix = ("Divide A, b and --redundancy-weight by one common factor (the optimum stays the "
           "same); similarities from `qpm similarities` are in [-1, 1].")
    for name, top in terms.items():
        if not top <= MAX_COEFFICIENT:  # also catches an overflow to inf
            raise QPMError(f"{name} reaches {top:.3g} in the objective; the solvers need "
                           f"coefficients up to {MAX_COEFFICIENT:g}.", fix)
    largest = max(terms["A (times 1000/(k*C))"], terms["b"])
    if 0 < largest < MIN_COEFFICIENT:
        raise QPMError(f"A and b are at most {largest:.3g} in the objective, below the "
                       f"solvers' tolerance ({MIN_COEFFICIENT:g}).",
                       "Multiply A and b by one common factor (the optimum stays the same).")


@dataclass(frozen=True)
class AssignmentProblem:
    """Inputs of one feature-class assignment.

    ``A`` is (F, C), ``R`` (F, F) or None, ``b`` (F,) or None. ``tau`` None means the
    threshold of ``tau_rule`` (``paper`` or ``tight``, see
    :func:`qpm.assignment.redundancy.default_tau`); a given tau sets ``tau_rule`` to
    ``"fixed"``, so the rule always says where tau came from. ``preset`` is a name; the
    registered preset it names is looked up once, here, and carried as ``spec`` (its
    ``rules`` and ``apply``). ``rho`` is read only by presets with forced pairs (chiqpm):
    the int(rho * C) closest class pairs must share k-1 features; they are found, and the
    request checked, here.
    """

    A: np.ndarray
    R: np.ndarray | None = None
    b: np.ndarray | None = None
    n_features: int = 50
    per_class: int = 5
    tau: float | None = None
    tau_rule: str = "paper"
    redundancy_weight: float = 1.0
    preset: str = "qpm"
    class_names: tuple[str, ...] | None = None
    feature_names: tuple[str, ...] | None = None
    rho: float = DEFAULT_RHO
    _pairs: Pairs | None = field(default=None, repr=False, compare=False)
    _forced: np.ndarray | None = field(default=None, repr=False, compare=False)
    _spec: Preset | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        A = np.asarray(self.A, dtype=np.float64)
        if A.ndim != 2 or A.shape[0] == 0 or A.shape[1] == 0:
            raise QPMError(
                f"A must be a non-empty 2-D array (features x classes), got shape {A.shape}.",
                "Pass the feature-class similarity matrix with one row per feature.",
            )
        _finite("A", A)
        F, C = A.shape
        R = None if self.R is None else np.asarray(self.R, dtype=np.float64)
        if R is not None:
            if R.shape != (F, F):
                raise QPMError(
                    f"R has shape {R.shape} but A has {F} features, so R must be ({F}, {F}).",
                    "Build A and R from the same features.",
                )
            _finite("R", R)
        b = None if self.b is None else np.asarray(self.b, dtype=np.float64)
        if b is not None:
            if b.shape != (F,):
                raise QPMError(
                    f"b has shape {b.shape} but A has {F} features, so b must be ({F},).",
                    "Pass one bias value per feature.",
                )
            _finite("b", b)
        n, k = int(self.n_features), int(self.per_class)
        if n < 1 or k < 1:
            raise QPMError(
                f"n_features ({n}) and per_class ({k}) must be positive.",
                "Use e.g. --n-features 50 --per-class 5.",
            )
        if n > F:
            raise QPMError(
                f"n_features={n} is larger than the {F} features available.",
                f"Use --n-features {F} or fewer.",
            )
        if k > n:
            raise QPMError(
                f"per_class={k} is larger than n_features={n}.",
                f"Use --per-class {n} or fewer, or select more features.",
            )
        if not np.isfinite(self.redundancy_weight) or self.redundancy_weight < 0:
            raise QPMError(
                f"redundancy_weight must be a finite number >= 0, got {self.redundancy_weight}.",
                "Use the default 1.0.",
            )
        _check_scale(A, b, float(self.redundancy_weight), 1000.0 / (k * C))
        if self.tau is not None and not np.isfinite(self.tau):
            raise QPMError(f"tau must be finite, got {self.tau}.", "Pass a finite threshold.")
        for names, count, what in (
            (self.class_names, C, "class_names"),
            (self.feature_names, F, "feature_names"),
        ):
            if names is not None and len(names) != count:
                raise QPMError(
                    f"{what} has {len(names)} entries but the problem has {count}.",
                    f"Give one name per {'class' if what == 'class_names' else 'feature'}.",
                )
        object.__setattr__(self, "A", A)
        object.__setattr__(self, "R", R)
        object.__setattr__(self, "b", b)
        object.__setattr__(self, "n_features", n)
        object.__setattr__(self, "per_class", k)
        if self.class_names is not None:
            object.__setattr__(self, "class_names", tuple(str(x) for x in self.class_names))
        if self.feature_names is not None:
            object.__setattr__(self, "feature_names", tuple(str(x) for x in self.feature_names))

        spec = get_preset(self.preset)
        object.__setattr__(self, "_spec", spec)
        if spec.rules.unique_columns and comb(n, k) < C:
            raise QPMError(
                f"No unique assignment exists: only C({n},{k}) = {comb(n, k)} distinct sets of "
                f"{k} features for {C} classes.",
                "Select more features (--n-features), change --per-class, or use a preset "
                "without uniqueness (--preset unbalanced).",
            )
        if spec.rules.forced_pairs:
            check_rho(self.rho, C, k)
            forced = closest_pairs(A, float(self.rho))
            check_request(forced, C, n, k, self.class_names)
            object.__setattr__(self, "rho", float(self.rho))
            object.__setattr__(self, "_forced", forced)
        if self.tau is not None:
            object.__setattr__(self, "tau", float(self.tau))
            object.__setattr__(self, "tau_rule", "fixed")
        else:
            object.__setattr__(self, "tau_rule", check_tau_rule(str(self.tau_rule)))
            if R is not None:
                object.__setattr__(self, "tau", default_tau(R, n, self.tau_rule))

    # -- derived quantities ---------------------------------------------------------------
    @property
    def spec(self) -> Preset:
        """The registered preset this problem is solved under (looked up once)."""
        return self._spec

    @property
    def rules(self) -> Rules:
        """What a feasible assignment of this problem satisfies (the preset's rules)."""
        return self._spec.rules

    @property
    def n_total(self) -> int:
        """F, the number of candidate features."""
        return int(self.A.shape[0])

    @property
    def n_classes(self) -> int:
        """C, the number of classes."""
        return int(self.A.shape[1])

    @property
    def scale(self) -> float:
        """The factor 1000 / (k*C) in front of the similarity term."""
        return 1000.0 / (self.per_class * self.n_classes)

    @property
    def uses_redundancy(self) -> bool:
        return self.R is not None and self.redundancy_weight > 0 and self.rules.redundancy

    @property
    def bias(self) -> np.ndarray:
        """``b``, or zeros when no bias was given."""
        return self.b if self.b is not None else np.zeros(self.n_total)

    def pairs(self) -> Pairs:
        """The redundancy pairs P (empty when the preset or the data has no redundancy)."""
        if self._pairs is None:
            if self.uses_redundancy:
                pairs = redundancy_pairs(self.R, self.tau)
            else:
                empty = np.zeros(0, dtype=np.int64)
                pairs = Pairs(empty, empty.copy(), np.zeros(0))
            object.__setattr__(self, "_pairs", pairs)
        return self._pairs

    def forced_pairs(self) -> np.ndarray:
        """The class pairs that must share k-1 features, (P, 2) ``(smaller, larger)`` closest
        first; empty unless the preset has forced pairs."""
        if self._forced is None:
            return np.zeros((0, 2), dtype=np.int64)
        return self._forced

    def objective(self, selected: np.ndarray, matrix: np.ndarray) -> float:
        """The objective of a selection mask (F,) and 0/1 assignment matrix (F, C), from arrays."""
        s = np.asarray(selected, dtype=bool)
        w = np.asarray(matrix, dtype=np.float64)
        value = self.scale * float(np.sum(self.A * w)) + float(self.bias @ s)
        p = self.pairs()
        if len(p):
            both = s[p.i] & s[p.j]
            value -= self.redundancy_weight * float(p.weight[both].sum())
        return value
