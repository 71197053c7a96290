"""The QPM model type: similarities.npz (shared) -> assignment.json -> fine-tuned qpm.pt.

The assignment is solved with the config's solver, or taken from a ``qpm solve`` result
(``qpm train --assignment RESULT.json``) after the independent verifier has checked it
against this run's own similarities. Either way it and the model live in the variant folder
of their setting, so several settings share one dense model and one set of features.
"""

from __future__ import annotations

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


def qpm_variant(cfg: TrainConfig) -> dict[str, Any]:
    if cfg.assignment:
        return {**cfg.fingerprint(GIVEN_FIELDS), "solver": "given",
                "assignment": rf.file_hash(cfg.assignment)}
    return cfg.fingerprint(SOLVE_FIELDS)


@register_model_type("qpm", variant=qpm_variant)
def qpm_stages(cfg: TrainConfig) -> list[Stage]:
    fields = DENSE_FIELDS + (GIVEN_FIELDS if cfg.assignment else SOLVE_FIELDS)
    solve = run_given_assignment if cfg.assignment else run_assignment
    return [
        Stage("similarities", rf.SIMILARITIES, DENSE_FIELDS, run_similarities,
              validate_similarities, main_only=True),
        Stage("assignment", rf.ASSIGNMENT, fields, solve, validate_assignment, main_only=True,
              per_variant=True),
        Stage("qpm", rf.model_file("qpm"), fields + FINETUNE_ONLY, run_finetune,
              validate_model, figure=rf.plot_file("qpm"), draw=draw.sparse_layer("qpm"),
              per_variant=True),
    ]


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
                "tau_rule": c.tau_rule}
    save_similarities(ctx.path(rf.SIMILARITIES), A, R, f["b"], class_names=names,
                      feature_names=[f"feature {i}" for i in range(A.shape[0])],
                      settings=settings)
    ctx.log(f"similarities: A {A.shape[0]} features x {A.shape[1]} classes, "
            f"{int(np.count_nonzero(R))} redundant pairs, locality bias in "
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
        n_features=c.n_features, per_class=c.per_class, preset=c.preset, **rule)


def run_assignment(ctx: RunContext) -> dict[str, Any]:
    from qpm.assignment.limits import default_time_limit
    from qpm.assignment.solving import solve

    c = ctx.config
    problem = _problem(ctx)
    limit = c.time_limit
    if limit is None:
        limit = default_time_limit(problem.n_total, problem.n_classes)
        if limit is not None:
            ctx.log(f"assignment: no --time-limit given: using {limit:.0f} s for this "
                    f"{problem.n_total} x {problem.n_classes} problem (pass --time-limit to "
                    "change it)")
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
               f"{len(problem.pairs())} penalised pairs)"))
    return {"assignment": {"status": result.status, "solver": result.solver,
                           "objective": result.objective, "gap": gap, "tau": result.tau,
                           "tau_rule": result.tau_rule, "penalised_pairs": len(problem.pairs())}}


def build_qpm_model(ctx: RunContext):
    """The dense model with its classifier replaced by the assigned QPM layer."""
    from qpm.assignment.result import AssignmentResult

    f = ctx.features()
    result = AssignmentResult.load_json(ctx.variant_path(rf.ASSIGNMENT),
                                        n_total=f["features"].shape[1])
    model = ctx.load_dense()
    layer = QPMLayer.from_assignment(result.matrix, result.selected_features, f["features"])
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
