"""Solver backends by name (gurobi, scip, highs; users may add their own), and the names
``--solver`` takes.

This module imports nothing heavy: a backend's module (and its solver) is imported when the
backend is first asked for, so the command line builds its ``--solver`` choices from
:func:`solver_names` without loading numpy or any solver. The default solver is written here
and nowhere else.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from qpm.errors import QPMError

DEFAULT_SOLVER = "gurobi"

# name -> "module:Class" (imported on first use, so a missing solver costs nothing) or a factory
_BACKENDS: dict[str, str | Callable[[], object]] = {
    "gurobi": "qpm.assignment.backends.gurobi:GurobiBackend",
    "scip": "qpm.assignment.backends.scip:ScipBackend",
    "highs": "qpm.assignment.backends.highs:HighsBackend",
}
# Names --solver takes that are no backend: the greedy heuristic is a formulation of its own
# (qpm.assignment.formulations.greedy) and needs no solver.
HEURISTICS = ("greedy",)


def register_backend(name: str, factory: str | Callable[[], object]) -> None:
    """Register a backend: a zero-argument factory (e.g. a subclass of
    :class:`~qpm.assignment.backends.base.Backend`) or ``"module:Class"``."""
    _BACKENDS[name] = factory


def backend_factory(name: str) -> str | Callable[[], object] | None:
    """The registry entry of ``name`` (None if unknown): lets a child process that runs one
    solver register a backend that was registered only in its parent."""
    return _BACKENDS.get(name)


def backend_names() -> list[str]:
    return list(_BACKENDS)


def solver_names() -> list[str]:
    """Every name ``--solver`` takes: the backends, then the heuristics."""
    return [*_BACKENDS, *HEURISTICS]


def check_solver(name: str) -> str:
    """``name`` if ``--solver`` takes it, else a QPMError listing the choices."""
    if name not in solver_names():
        raise QPMError(f"Unknown solver {name!r}.", f"Choose one of: {', '.join(solver_names())}.")
    return name


def get_backend(name: str):
    """The backend called ``name``; unknown names raise a QPMError listing the choices."""
    try:
        factory = _BACKENDS[name]
    except KeyError:
        raise QPMError(
            f"Unknown solver backend {name!r}.", f"Choose one of: {', '.join(_BACKENDS)}."
        ) from None
    if isinstance(factory, str):
        module, _, cls = factory.partition(":")
        factory = getattr(importlib.import_module(module), cls)
    backend = factory()
    if not backend.name:
        backend.name = name
    return backend
