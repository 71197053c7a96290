"""Constraint presets, each registered once by name: its rules and its ``apply`` together.

A preset says which rules a valid assignment obeys (:class:`Rules`: read by the verifier, the
heuristic and the cut formulation) and how to add them to the full formulation's Pyomo model
(``apply(model, problem)``; the model's surface is documented in
:mod:`qpm.assignment.formulations.full`). A problem resolves its preset once, when it is built
(``problem.spec``). Built-in presets are defined below with the :func:`preset` decorator; users
register theirs the same way or with :func:`register_preset`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from math import comb

from qpm.errors import QPMError


@dataclass(frozen=True)
class Rules:
    """What a feasible assignment must satisfy.

    per_class_exact: every class uses exactly k features; otherwise the total is C*k and
    every class uses at least one. unique_columns: no two classes share the same feature set.
    redundancy: the objective subtracts the R' penalty over the pairs P. forced_pairs: the
    int(rho * C) closest class pairs share exactly k-1 features each
    (:mod:`qpm.assignment.forced_pairs`).
    """

    per_class_exact: bool = True
    unique_columns: bool = True
    redundancy: bool = True
    forced_pairs: bool = False


@dataclass(frozen=True)
class Preset:
    """A registered preset. ``cuts``: the cut formulation solves it (it builds these rules
    itself; a preset whose ``apply`` adds its own constraints needs the full model).
    ``cuts_note``: why not, said when ``--formulation auto`` picks the full model for it."""

    name: str
    rules: Rules
    description: str = ""
    apply: Callable | None = field(default=None, compare=False)
    cuts: bool = False
    cuts_note: str = ""


_PRESETS: dict[str, Preset] = {}
# Renamed: the old name claimed the reference's flow, which the preset never was.
RENAMED = {"qpm-iterative": "qpm-lazy"}


def register_preset(
    name: str,
    apply: Callable | None = None,
    rules: Rules | None = None,
    description: str = "",
    cuts: bool = False,
    cuts_note: str = "",
) -> Preset:
    """Register a preset; ``apply(model, problem)`` adds its constraints to the Pyomo model."""
    spec = Preset(name, rules or Rules(), description, apply, cuts, cuts_note)
    _PRESETS[name] = spec
    return spec


def preset(name: str, rules: Rules | None = None, description: str = "",
           cuts: bool = False, cuts_note: str = "") -> Callable[[Callable], Callable]:
    """Decorator: register the decorated ``apply(model, problem)`` as preset ``name``."""

    def add(apply: Callable) -> Callable:
        register_preset(name, apply, rules, description, cuts, cuts_note)
        return apply

    return add


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


# -- the built-in presets ------------------------------------------------------------------------
# Their apply bodies use the full model's row builders, imported on use: the problem (and
# with it this module) stays free of Pyomo until a full model is built.


def _full():
    from qpm.assignment.formulations import full

    return full


@preset("qpm", cuts=True, description="The paper's problem: k per class, unique classes.")
def apply_qpm(m, problem) -> None:
    """k per class for every class; uniqueness for all class pairs when that is small."""
    full = _full()
    full.add_per_class_exact(m, problem)
    C = problem.n_classes
    if comb(C, 2) * problem.n_total <= full.UNIQUE_UPFRONT_LIMIT:
        full.add_uniqueness(m, problem, [(c, d) for c in range(C) for d in range(c + 1, C)])


@preset("qpm-lazy", cuts=True,
        description="As qpm (the same exact optimum), solved lazily: start from the relaxation "
        "(total C*k, at least one per class), then add the exact per-class = k and uniqueness "
        "constraints for the violating classes only and re-solve warm-started. Not the "
        "reference's iterative flow, which restricts them to the features selected so far.")
def apply_lazy(m, problem) -> None:
    """The lazy start: total ``<= C*k`` and at least one per class; the full formulation's
    loop adds what an answer violates."""
    _full().add_relaxed_budget(m, problem, "<=")


@preset("unbalanced", rules=Rules(per_class_exact=False, unique_columns=False),
        description="Total budget C*k, at least one feature per class, no uniqueness.")
def apply_unbalanced(m, problem) -> None:
    """Total exactly ``C*k``, at least one per class, no uniqueness."""
    _full().add_relaxed_budget(m, problem, "==")


register_preset("qpm-full", apply_qpm, Rules(),
                "As qpm, always solved with the straightforward Pyomo model (w_ic for every "
                "feature and class) instead of the cut formulation.")
register_preset("no-redundancy", apply_qpm, Rules(redundancy=False),
                "As qpm without the feature-redundancy penalty.", cuts=True)


@preset("chiqpm", rules=Rules(forced_pairs=True),
        description="CHiQPM's: as qpm, and the int(rho*C) closest class pairs (columns of A, "
        "Euclidean) share exactly k-1 features (--rho, default 0.5). Solved with the full "
        "model.", cuts_note="the cut formulation does not model forced class pairs")
def apply_chiqpm(m, problem) -> None:
    """As qpm, plus the forced pairs' rows (linearised exactly, see ``add_forced_pairs``)."""
    apply_qpm(m, problem)
    _full().add_forced_pairs(m, problem, problem.forced_pairs())
