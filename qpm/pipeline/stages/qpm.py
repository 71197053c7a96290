"""The QPM model type: similarities.npz (shared) -> assignment.json -> fine-tuned qpm.pt.

The assignment is solved with the config's solver, or taken from a ``qpm solve`` result
(``qpm train --assignment RESULT.json``) after the independent verifier has checked it
against this run's own similarities. Either way it and the model live in the variant folder
of their setting, so several settings share one dense model and one set of features. The
similarities and assignment stages are shared with CHiQPM (:mod:`.chiqpm`); a preset with
forced class pairs adds ``rho`` to what the assignment depends on.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from qpm import run_folder as rf
from qpm.errors import QPMError
from qpm.io import ArtifactError
from qpm.models.qpm_layer import QPMLayer
from qpm.pipeline import distributed as dist
from qpm.pipeline.stages import draw
from qpm.pipeline.stages.base import (
    DENSE_FIELDS,
    FINETUNE_ONLY,
    RunContext,
    Stage,
    register_model_type,
    validate_model,
)
from qpm.run_folder.config import TrainConfig
from qpm.text import printable

# What a solved assignment depends on, and a given one (its content is in the variant name).
SOLVE_FIELDS = ("solver", "preset", "tau_rule", "n_features", "per_class", "time_limit",
                "mip_gap", "locality_bias")
GIVEN_FIELDS = ("preset", "tau_rule", "n_features", "per_class", "locality_bias")
ASSIGNMENT_FIELDS = DENSE_FIELDS + SOLVE_FIELDS
FINETUNE_FIELDS = ASSIGNMENT_FIELDS + FINETUNE_ONLY


def forced_pairs(cfg: TrainConfig) -> bool:
    """Whether the config's preset forces class pairs (chiqpm), so that rho matters."""
    from qpm.assignment.presets import get_preset

    return get_preset(cfg.preset).rules.forced_pairs


def assignment_fields(cfg: TrainConfig) -> tuple[str, ...]:
    """The config fields the assignment stage depends on (rho only where it is read, so
    the records of runs without forced pairs stay as they were)."""
    base = GIVEN_FIELDS if cfg.assignment else SOLVE_FIELDS
    return DENSE_FIELDS + base + (("rho",) if forced_pairs(cfg) else ())


def qpm_variant(cfg: TrainConfig) -> dict[str, Any]:
    values = cfg.fingerprint(GIVEN_FIELDS if cfg.assignment else SOLVE_FIELDS)
    if forced_pairs(cfg):
        values["rho"] = cfg.rho
    if cfg.assignment:
        return {**values, "solver": "given", "assignment": rf.file_hash(cfg.assignment)}
    return values


def assigned_stages(cfg: TrainConfig, model_type: str,
                    finetune: Callable[[RunContext], dict[str, Any]]) -> list[Stage]:
    """similarities.npz (shared), the variant's assignment.json, and ``model_type``'s model
    file fine-tuned by ``finetune`` from it (QPM's stages; CHiQPM's with its own
    fine-tuning)."""
    solve = run_given_assignment if cfg.assignment else run_assignment
    return [
        Stage("similarities", rf.SIMILARITIES, DENSE_FIELDS, run_similarities,
              validate_similarities, main_only=True),
        Stage("assignment", rf.ASSIGNMENT, assignment_fields(cfg), solve, validate_assignment,
              main_only=True, per_variant=True),
        Stage(model_type, rf.model_file(model_type), assignment_fields(cfg) + FINETUNE_ONLY,
              finetune, validate_model, figure=rf.plot_file(model_type),
              draw=draw.sparse_layer(model_type), per_variant=True),
    ]


@register_model_type("qpm", variant=qpm_variant)
def qpm_stages(cfg: TrainConfig) -> list[Stage]:
    return assigned_stages(cfg, "qpm", run_finetune)


def run_similarities(ctx: RunContext) -> None:
    from qpm.assignment.cache import save_similarities
    from qpm.assignment.similarities import compute_similarities

    f = ctx.features()
    c = ctx.config
    names = [str(x) for x in f["class_names"].tolist()]
    A, R = compute_similarities(f["features"], f["labels"], len(names))
    # The problem settings of the run that computed it travel with the arrays: `qpm solve`
    # and `qpm compare` on this file solve that run's problem unless told otherwise.
    settings = {"n_features": c.n_features, "per_class": c.per_class, "preset": c.preset,
                "tau_rule": c.tau_rule, "rho": c.rho if forced_pairs(c) else None}
    save_similarities(ctx.path(rf.SIMILARITIES), A, R, f["b"], class_names=names,
                      feature_names=[f"feature {i}" for i in range(A.shape[0])],
                      settings=settings)
    ctx.log(f"similarities: A {A.shape[0]} features x {A.shape[1]} classes, "
            f"{int(np.count_nonzero(R))} redundant pairs (R > 0), locality bias in "
            f"[{f['b'].min():.3f}, {f['b'].max():.3f}]"
            + (" (not in this run's objective: --locality-bias off)"
               if c.locality_bias == "off" else ""))


def _problem(ctx: RunContext, tau: float | None = None):
    from qpm.assignment.cache import load_similarities

    c = ctx.config
    rule = {"tau_rule": c.tau_rule} if tau is None else {"tau": tau}
    if c.locality_bias == "off":  # DINO-QPM's configs (no_b): no locality term b
        rule["b"] = None
    return load_similarities(ctx.path(rf.SIMILARITIES)).problem(
        n_features=c.n_features, per_class=c.per_class, preset=c.preset, rho=c.rho, **rule)


def run_assignment(ctx: RunContext) -> dict[str, Any]:
    from qpm.assignment.limits import default_time_limit, time_limit_line
    from qpm.assignment.solving import solve

    c = ctx.config
    problem = _problem(ctx)
    limit = c.time_limit
    if limit is None:
        limit = default_time_limit(problem.n_total, problem.n_classes)
        ctx.log("assignment: " + time_limit_line(limit, problem.n_total, problem.n_classes))
    result = solve(problem, solver=c.solver, time_limit=limit, mip_gap=c.mip_gap,
                   strict_solver=c.strict_solver)
    if result.matrix is None or not result.selected_features:
        raise QPMError(f"The assignment solve found no solution ({result.status}: "
                       f"{result.message}).",
                       "Give it more time with --time-limit, or relax --n-features/--per-class.")
    return _keep(ctx, result, problem)


def run_given_assignment(ctx: RunContext) -> dict[str, Any]:
    """A ``qpm solve`` result, used only if it is a valid assignment of this run's problem
    whose objective, recomputed from this run's similarities, is the one it claims."""
    from qpm.assignment.result import AssignmentResult
    from qpm.assignment.verifier import verify

    path = Path(ctx.config.assignment)
    fix = (f"Solve this run's problem: qpm solve {ctx.path(rf.SIMILARITIES)} "
           "--out RESULT.json, then pass --assignment RESULT.json.")
    n_total = ctx.features()["features"].shape[1]
    result = AssignmentResult.load_json(path, n_total=n_total)
    if result.matrix is None or not result.selected_features:
        raise QPMError(f"{path} holds no assignment (status {result.status}).", fix)
    problem = _problem(ctx, result.tau)
    check = verify(problem, result.selected_features, result.matrix, result.objective)
    if not check.ok:
        raise QPMError(f"{path} is not a solution of this run's problem: "
                       f"{'; '.join(check.violations)}.", fix)
    mine = problem.forced_pairs().tolist()
    if result.forced_pairs is not None and sorted(result.forced_pairs) != sorted(mine):
        raise QPMError(f"{path} records other forced class pairs than this run's "
                       f"similarities give for rho={problem.rho:g}.", fix)
    if problem.rules.forced_pairs:
        result.rho, result.forced_pairs = problem.rho, mine
    result.verified, result.objective = True, check.objective
    result.message = f"given: {printable(path)} (verified on this run's similarities)"
    return _keep(ctx, result, problem)


def _keep(ctx: RunContext, result, problem) -> dict[str, Any]:
    result.save_json(ctx.variant_path(rf.ASSIGNMENT))
    gap = result.gap
    ctx.log(f"assignment: {result.status} with {result.solver}"
            + (f" (fell back: {result.fallback})" if result.fallback else "")
            + f", objective {result.objective:.3f}"
            + ("" if gap is None else f", gap {100 * gap:.3g}%")
            + ("" if result.tau is None else f", tau {result.tau:.4g} ({result.tau_rule} rule, "
               f"{len(problem.pairs())} penalised pairs with R >= tau)"))
    forced = len(problem.forced_pairs())
    if problem.rules.forced_pairs:
        ctx.log(f"assignment: {forced} forced class pairs (rho {problem.rho:g}) share k-1 = "
                f"{problem.per_class - 1} features")
    return {"assignment": {"status": result.status, "solver": result.solver,
                           "objective": result.objective, "gap": gap, "tau": result.tau,
                           "tau_rule": result.tau_rule, "penalised_pairs": len(problem.pairs()),
                           **({"rho": problem.rho, "forced_pairs": forced}
                              if problem.rules.forced_pairs else {})}}


def build_qpm_model(ctx: RunContext, head: type[QPMLayer] = QPMLayer):
    """The dense model with its classifier replaced by the assigned QPM (or ``head``) layer."""
    from qpm.assignment.result import AssignmentResult

    f = ctx.features()
    result = AssignmentResult.load_json(ctx.variant_path(rf.ASSIGNMENT),
                                        n_total=f["features"].shape[1])
    model = ctx.load_dense()
    layer = head.from_assignment(result.matrix, result.selected_features, f["features"])
    model.classifier = layer.to(ctx.device)
    return model


def run_finetune(ctx: RunContext) -> dict[str, Any]:
    c = ctx.config
    model = build_qpm_model(ctx)
    before, acc = ctx.finetune(model, "qpm", "QPM")
    layer = dist.unwrap(model).classifier
    ctx.save_model(ctx.variant_path(rf.model_file("qpm")), model, {
        "accuracy": acc, "accuracy_before_finetune": before,
        "class_names": ctx.class_names(),
        "assignment": {str(k): v for k, v in layer.assignment().items()},
        "n_features": c.n_features, "per_class": c.per_class,
    })
    ctx.drop_ckpt("qpm")
    return {"qpm": {"accuracy": acc, "accuracy_before_finetune": before,
                    "n_features": layer.n_features, "per_class": c.per_class}}


# --- validators -------------------------------------------------------------------------------


def validate_similarities(path: Path) -> None:
    from qpm.assignment.cache import load_similarities

    try:
        load_similarities(path)
    except QPMError as exc:
        raise ArtifactError(exc.problem, exc.fix) from None


def validate_assignment(path: Path) -> None:
    from qpm.assignment.result import AssignmentResult

    try:
        result = AssignmentResult.load_json(path)
    except QPMError as exc:
        raise ArtifactError(exc.problem, exc.fix) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(f"{path} is corrupt ({exc}).", f"Delete {path} and re-run.") from None
    if result.matrix is None or not result.selected_features:
        raise ArtifactError(f"{path} holds no assignment (status {result.status}).",
                            f"Delete {path} and re-run.")
