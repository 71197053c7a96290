"""Feature-class assignment: numpy arrays in, a verified solution out (no torch needed).

The public names below are imported on first use, so ``import qpm.assignment`` stays cheap
(no Pyomo or solver until a solve needs one).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "AssignmentProblem": "qpm.assignment.problem",
    "AssignmentResult": "qpm.assignment.result",
    "solve": "qpm.assignment.solving",
    "compute_similarities": "qpm.assignment.similarities",
    "save_similarities": "qpm.assignment.cache",
    "load_similarities": "qpm.assignment.cache",
    "verify": "qpm.assignment.verifier",
    "heuristic_solution": "qpm.assignment.heuristic",
    "make_instance": "qpm.assignment.synthetic",
    "register_preset": "qpm.assignment.presets",
    "register_backend": "qpm.assignment.backends",
    "build_model": "qpm.assignment.formulations.full",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'qpm.assignment' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
