"""The default time limit of the command line (a module of its own: no numpy, no solver).

Without a time limit, a problem of at least :data:`LARGE_CELLS` features x classes gets
:data:`LARGE_TIME_LIMIT` seconds from ``qpm train``/``solve``/``compare``: at CUB size
(2048 x 200) a 1e-4 gap is out of reach (benchmarks/cub_report.md: 600 s certify about 0.7%),
so the solve would otherwise run for ever. The library's ``solve()`` keeps None = no limit.
"""

from __future__ import annotations

LARGE_CELLS = 100_000
LARGE_TIME_LIMIT = 600.0
# qpm compare: seconds past the time limit before a run that has not answered counts as hung.
DEFAULT_GRACE = 60.0


def default_time_limit(n_total: int, n_classes: int) -> float | None:
    """None (no limit) for small problems, :data:`LARGE_TIME_LIMIT` for large ones."""
    return LARGE_TIME_LIMIT if n_total * n_classes >= LARGE_CELLS else None
