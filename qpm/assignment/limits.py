"""The command line's defaults for a problem's size (a module of its own: no numpy, no solver).

``qpm train``/``solve``/``compare`` give every solve a time limit when none is given, scaled
with the problem's features x classes: :data:`MIN_TIME_LIMIT` seconds for small problems,
growing in proportion up to :data:`LARGE_TIME_LIMIT` from :data:`LARGE_CELLS` on. At CUB size
(2048 x 200) a 1e-4 gap is out of reach (benchmarks/cub_report.md: 600 s certify about 0.7%),
and even a small problem can run for many minutes on HiGHS (a 512-feature ResNet-18 with 4
classes ran 439 s and more without a limit). The library's ``solve()`` keeps None = no limit.

The number of features n defaults to :data:`DEFAULT_N_FEATURES` (the paper's 50), but never
to more than the classes can use (C·k: each class takes k) or the backbone has.
"""

from __future__ import annotations

LARGE_CELLS = 100_000
LARGE_TIME_LIMIT = 600.0
MIN_TIME_LIMIT = 60.0
DEFAULT_N_FEATURES = 50
DEFAULT_PER_CLASS = 5
# qpm compare: seconds past the time limit before a run that has not answered counts as hung.
DEFAULT_GRACE = 60.0


def default_time_limit(n_total: int, n_classes: int) -> float:
    """Seconds for a solve of ``n_total`` features x ``n_classes`` classes: in proportion to
    the size, from :data:`MIN_TIME_LIMIT` up to :data:`LARGE_TIME_LIMIT`."""
    share = n_total * n_classes / LARGE_CELLS
    return float(min(LARGE_TIME_LIMIT, max(MIN_TIME_LIMIT, round(LARGE_TIME_LIMIT * share))))


def default_n_features(n_classes: int, per_class: int, n_total: int | None = None) -> int:
    """n when none is given: 50, but at most C·k (more could never all be used) and at most
    the ``n_total`` features there are."""
    n = min(DEFAULT_N_FEATURES, n_classes * per_class)
    return n if n_total is None else min(n, n_total)


def time_limit_line(limit: float, n_total: int, n_classes: int) -> str:
    """What a command prints when it uses the default limit."""
    return (f"no --time-limit given: using {limit:.0f} s for this {n_total} x {n_classes} "
            "problem (pass --time-limit to change it)")
