"""Solver backends by name: gurobi (default), scip, highs, greedy; users may add their own."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from qpm.assignment.backends.base import (
    Backend,
    BackendOutcome,
    LicenceLimit,
    Session,
    SolveOptions,
)
from qpm.errors import QPMError

__all__ = [
    "SolveOptions",
    "Backend",
    "BackendOutcome",
    "LicenceLimit",
    "Session",
    "backend_factory",
    "backend_names",
    "get_backend",
    "register_backend",
]

DEFAULT_BACKEND = "gurobi"

# name -> "module:Class" (imported on first use, so a missing solver costs nothing) or a factory
_BACKENDS: dict[str, str | Callable[[], Backend]] = {
    "gurobi": "qpm.assignment.backends.gurobi:GurobiBackend",
    "scip": "qpm.assignment.backends.scip:ScipBackend",
    "highs": "qpm.assignment.backends.highs:HighsBackend",
    "greedy": "qpm.assignment.formulations.greedy:GreedyBackend",
}


def register_backend(name: str, factory: str | Callable[[], Backend]) -> None:
    """Register a backend: a zero-argument factory (e.g. the class) or ``"module:Class"``."""
    _BACKENDS[name] = factory


def backend_factory(name: str) -> str | Callable[[], Backend] | None:
    """The registry entry of ``name`` (None if unknown): lets a child process that runs one
    solver register a backend that was registered only in its parent."""
    return _BACKENDS.get(name)


def backend_names() -> list[str]:
    return list(_BACKENDS)


def get_backend(name: str) -> Backend:
    """The backend called ``name``; unknown names raise a QPMError listing the choices."""
    try:
        factory = _BACKENDS[name]
    except KeyError:
        raise QPMError(
            f"Unknown solver {name!r}.", f"Choose one of: {', '.join(_BACKENDS)}."
        ) from None
    if isinstance(factory, str):
        module, _, cls = factory.partition(":")
        factory = getattr(importlib.import_module(module), cls)
    backend = factory()
    if not backend.name:
        backend.name = name
    return backend
