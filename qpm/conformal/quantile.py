"""The split-conformal quantile and its finite-sample guarantee.

With n calibration scores s_1..s_n and a target coverage 1 - alpha, the threshold is the
K-th smallest score, K = ceil((n + 1)(1 - alpha)); when K > n no finite threshold is valid and
the prediction set is every class. For a test point exchangeable with the calibration points,
the set {y : s(x, y) <= q_hat} then covers the true class with probability

    1 - alpha  <=  P(covered) = K / (n + 1)  <  1 - alpha + 1 / (n + 1)

(Vovk et al. 2005; the upper bound needs distinct scores). The probability is over the
calibration draw and the test point: one calibration split's coverage on m test images
scatters around it by about sqrt(alpha (1 - alpha) / m) plus the spread of the split itself.

This is torchcp 1.2's ``calculate_conformal_value`` (``torch.kthvalue`` at that K). The
CHiQPM reference ran torchcp 0.1.3, which takes ``torch.quantile`` (linear interpolation) at
level (n + 1)(1 - alpha) / n without the ceiling and then keeps the classes with a score
*strictly* below the threshold; the README's table of differences says what that changes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# (n + 1) * coverage is computed in floating point: 100 * 0.9 must count as 90, not 90.0000001.
_EPS = 1e-9


def check_coverage(coverage: float) -> float:
    c = float(coverage)
    if not (math.isfinite(c) and 0.0 < c < 1.0):
        raise ValueError(f"coverage must lie strictly between 0 and 1, got {coverage!r}")
    return c


def rank(n: int, coverage: float) -> int:
    """K = ceil((n + 1) * coverage): the rank of the threshold among n scores."""
    return max(1, math.ceil((n + 1) * check_coverage(coverage) - _EPS))


def conformal_quantile(scores: np.ndarray, coverage: float) -> float:
    """The K-th smallest of ``scores`` (see the module docstring); +inf when K > n."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    k = rank(s.size, coverage)
    if s.size == 0 or k > s.size:
        return math.inf
    return float(np.partition(s, k - 1)[k - 1])


@dataclass(frozen=True)
class Bound:
    """Split conformal's guarantee for n calibration images at a target coverage."""

    coverage: float
    n: int

    @property
    def expected(self) -> float:
        """K / (n + 1): the coverage in expectation (distinct scores); 1 when K > n."""
        k = rank(self.n, self.coverage)
        return 1.0 if k > self.n else k / (self.n + 1)

    @property
    def upper(self) -> float:
        return self.coverage + 1.0 / (self.n + 1)

    def line(self) -> str:
        return (f"split conformal: {self.coverage:g} <= E[coverage] < {self.coverage:g} + "
                f"1/(n+1) = {self.upper:.4f} with n = {self.n} calibration images")


def bound_note() -> str:
    """One line for every table of coverages: what the bound means."""
    return ("bound: 1-alpha <= E[coverage] < 1-alpha + 1/(n+1) over calibration draws (n "
            "calibration images; the upper side\nneeds distinct scores); one split's coverage "
            "on m images scatters by about sqrt(alpha(1-alpha)/m) around it")
