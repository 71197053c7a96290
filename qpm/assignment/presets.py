"""Constraint presets, registered by name.

A preset says which rules a valid assignment obeys (:class:`Rules`, used by the verifier
and by the heuristic) and how to add them to the Pyomo model (``apply``, a plain function
of ``(model, problem)``). Users register their own with :func:`register_preset`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from qpm.errors import QPMError


@dataclass(frozen=True)
class Rules:
    """What a feasible assignment must satisfy.

    per_class_exact: every class uses exactly k features; otherwise the total is C*k and
    every class uses at least one. unique_columns: no two classes share the same feature set.
    redundancy: the objective subtracts the R' penalty over the pairs P.
    """

    per_class_exact: bool = True
    unique_columns: bool = True
    redundancy: bool = True


@dataclass(frozen=True)
class Preset:
    name: str
    rules: Rules
    description: str = ""
    # Adds the preset's constraints to the Pyomo model built by qpm.assignment.formulations.full.
    apply: Callable | None = field(default=None, compare=False)
    # Solve flow: "direct" (one solve) or "iterative" (add violated constraints, re-solve).
    flow: str = "direct"


_PRESETS: dict[str, Preset] = {}


def register_preset(
    name: str,
    apply: Callable | None = None,
    rules: Rules | None = None,
    description: str = "",
    flow: str = "direct",
) -> Preset:
    """Register a preset; ``apply(model, problem)`` adds its constraints to the model."""
    preset = Preset(name, rules or Rules(), description, apply, flow)
    _PRESETS[name] = preset
    return preset


def get_preset(name: str) -> Preset:
    try:
        return _PRESETS[name]
    except KeyError:
        if name in RENAMED:
            raise QPMError(
                f"Preset {name!r} is now called {RENAMED[name]!r} (it solves the exact qpm "
                "problem lazily; it is not the reference implementation's iterative flow).",
                f"Use --preset {RENAMED[name]}.",
            ) from None
        raise QPMError(
            f"Unknown preset {name!r}.", f"Choose one of: {', '.join(sorted(_PRESETS))}."
        ) from None


def preset_names() -> list[str]:
    return sorted(_PRESETS)


# The built-in presets. Their `apply` functions live in qpm.assignment.formulations.full, which
# registers them again with the function attached when it is imported.
register_preset(
    "qpm", rules=Rules(), description="The paper's problem: k per class, unique classes."
)
register_preset(
    "qpm-lazy",
    rules=Rules(),
    flow="iterative",
    description="As qpm (the same exact optimum), solved lazily: start from the relaxation "
    "(total C*k, at least one per class), then add the exact per-class = k and uniqueness "
    "constraints for the violating classes only and re-solve warm-started. Not the "
    "reference's iterative flow, which restricts them to the features selected so far.",
)
# Renamed: the old name claimed the reference's flow, which the preset never was.
RENAMED = {"qpm-iterative": "qpm-lazy"}
register_preset(
    "qpm-full",
    rules=Rules(),
    description="As qpm, always solved with the straightforward Pyomo model (w_ic for every "
    "feature and class) instead of the cut formulation.",
)
register_preset(
    "unbalanced",
    rules=Rules(per_class_exact=False, unique_columns=False),
    description="Total budget C*k, at least one feature per class, no uniqueness.",
)
register_preset(
    "no-redundancy",
    rules=Rules(redundancy=False),
    description="As qpm without the feature-redundancy penalty.",
)
