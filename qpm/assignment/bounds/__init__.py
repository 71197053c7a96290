"""Upper bounds on the assignment optimum, computed without solving: the certificate room.

The problem is a maximisation, so a bound is an UPPER bound: no feasible assignment of the
problem's preset is worth more. Every method bounds a relaxation of the preset's
:class:`~qpm.assignment.presets.Rules` (uniqueness dropped, the rest kept or relaxed), so its
value holds for every preset whose assignments obey those rules, including presets that add
constraints of their own. A method takes the problem (numpy arrays and sizes) and returns a
:class:`Bound`; :func:`upper_bound` is the entry point, ``qpm bound`` the command.

Methods are registered once, below, by name -> ``"module:function"`` (imported on first use,
so the command line lists them without importing numpy or a solver):

* ``topk``: the Lagrangian bound of the relaxation without the redundancy penalty (each class
  its k best selected features, or the budget presets' C*k best (feature, class) pairs),
  minimised over the dual thresholds; cheap, valid for every preset, weak where redundancy
  matters.
* ``lp``: the root LP of the cut formulation (top-k cuts, McCormick pairs, clique rows), the
  bound ``--formulation cuts`` starts from; presets with exactly k features per class.

What else was tried (a convexified penalty from the Shor SDP, PSD cuts, a Lagrangian
decomposition over the features, Gurobi's cut families) and what it measured is in
``benchmarks/cub_report.md``, "Bounds that see the whole selection".
"""

from __future__ import annotations

import importlib
import math
import time
from dataclasses import dataclass

from qpm.errors import QPMError

# name -> "module:function"; the function is compute(problem, options) -> Bound.
_METHODS: dict[str, str] = {
    "topk": "qpm.assignment.bounds.lagrange:topk_bound",
    "lp": "qpm.assignment.bounds.root:lp_bound",
}
AUTO = "auto"


@dataclass(frozen=True)
class Bound:
    """An upper bound ``value`` on the optimum, the method that proved it, its seconds."""

    value: float
    method: str
    seconds: float
    detail: str = ""

    def to_dict(self) -> dict:
        return {"bound": self.value, "method": self.method, "seconds": self.seconds,
                "detail": self.detail}


@dataclass(frozen=True)
class BoundOptions:
    """What a method may use: ``time_limit`` seconds (None: until it converges), solver
    ``threads``, the LP ``backend`` by name, ``progress`` lines."""

    time_limit: float | None = None
    threads: int | None = None
    backend: str = "highs"
    progress: bool = False


def method_names() -> list[str]:
    """The methods ``--method`` takes (``auto`` first)."""
    return [AUTO, *_METHODS]


def register_method(name: str, target: str) -> None:
    """Register ``compute(problem, options) -> Bound`` as ``"module:function"``."""
    _METHODS[name] = target


def check_method(name: str) -> str:
    if name != AUTO and name not in _METHODS:
        raise QPMError(f"Unknown bound method {name!r}.",
                       f"Choose one of: {', '.join(method_names())}.")
    return name


def resolve(name: str, problem) -> str:
    """The method that runs: ``auto`` is ``lp`` where the problem has exactly k features per
    class, else ``topk``."""
    check_method(name)
    if name != AUTO:
        return name
    return "lp" if problem.rules.per_class_exact else "topk"


def _compute(name: str):
    module, _, function = _METHODS[name].partition(":")
    return getattr(importlib.import_module(module), function)


def upper_bound(problem, method: str = AUTO, time_limit: float | None = None,
                threads: int | None = None, backend: str = "highs",
                progress: bool = False) -> Bound:
    """An upper bound on the optimum of ``problem`` under its preset, by ``method``."""
    if time_limit is not None and not (math.isfinite(time_limit) and time_limit > 0):
        raise QPMError(f"time_limit must be a positive number, got {time_limit}.",
                       "Use e.g. 60.")
    name = resolve(method, problem)
    opts = BoundOptions(time_limit=time_limit, threads=threads, backend=backend,
                        progress=progress)
    t0 = time.perf_counter()
    found = _compute(name)(problem, opts)
    seconds = time.perf_counter() - t0
    if not math.isfinite(found.value):
        raise QPMError(f"The {name} bound did not finish ({found.detail or 'no value'}).",
                       "Give it more time (--time-limit) or use --method topk.")
    return Bound(found.value, name, seconds, found.detail)


# A bound below a verified objective by more than this (relative) is a bug, never a certificate.
TOLERANCE = 1e-6


def certify(problem, result, method: str = AUTO, time_limit: float | None = None,
            threads: int | None = None) -> None:
    """Attach an independent upper bound to a solve ``result`` (``result.certificate``).

    A bound below the result's verified objective would mean a wrong relaxation: that is an
    error, never a certificate.
    """
    found = upper_bound(problem, method, time_limit=time_limit, threads=threads)
    if result.verified and result.objective is not None:
        slack = TOLERANCE * max(1.0, abs(result.objective))
        if found.value < result.objective - slack:
            raise QPMError(
                f"The {found.method} bound {found.value:.6g} lies below the verified objective "
                f"{result.objective:.6g}.",
                "This is a bug in the bound; report it and use another --bound-method.")
    result.certificate = {"bound": found.value, "method": found.method,
                          "seconds": found.seconds}


def check_supported(method: str, problem) -> str:
    """``method`` resolved for ``problem``, or a QPMError when it cannot bound its preset."""
    name = resolve(method, problem)
    if name == "lp" and not problem.rules.per_class_exact:
        raise QPMError(f"The lp bound needs exactly k features per class; preset "
                       f"{problem.preset!r} uses a total budget.", "Use --bound-method topk.")
    return name
