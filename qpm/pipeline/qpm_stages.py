"""The QPM model type: similarities.npz -> assignment.json -> fine-tuned qpm.pt."""

from __future__ import annotations

from typing import Any

import numpy as np

from qpm.errors import QPMError
from qpm.models.qpm_layer import QPMLayer
from qpm.pipeline import distributed as dist
from qpm.pipeline import run_folder as rf
from qpm.pipeline.stages import (
    ASSIGNMENT_FIELDS,
    DENSE_FIELDS,
    FINETUNE_FIELDS,
    RunContext,
    Stage,
    register_model_type,
    validate_assignment,
    validate_model,
    validate_similarities,
)


def run_similarities(ctx: RunContext) -> None:
    from qpm.assignment.cache import save_similarities
    from qpm.assignment.similarities import compute_similarities

    f = ctx.features()
    c = ctx.config
    names = [str(x) for x in f["class_names"].tolist()]
    A, R = compute_similarities(f["features"], f["labels"], len(names))
    # The run's problem settings travel with the arrays: `qpm solve`/`qpm compare` on this
    # file solve the same problem as the run.
    settings = {"n_features": c.n_features, "per_class": c.per_class, "preset": c.preset,
                "tau_rule": c.tau_rule}
    save_similarities(ctx.path(rf.SIMILARITIES), A, R, f["b"], class_names=names,
                      feature_names=[f"feature {i}" for i in range(A.shape[0])],
                      settings=settings)
    ctx.log(f"similarities: A {A.shape[0]} features x {A.shape[1]} classes, "
            f"{int(np.count_nonzero(R))} redundant pairs, locality bias in "
            f"[{f['b'].min():.3f}, {f['b'].max():.3f}]")


def run_assignment(ctx: RunContext) -> dict[str, Any]:
    from qpm.assignment.cache import load_similarities
    from qpm.assignment.limits import default_time_limit
    from qpm.assignment.solving import solve

    c = ctx.config
    problem = load_similarities(ctx.path(rf.SIMILARITIES)).problem(
        n_features=c.n_features, per_class=c.per_class, preset=c.preset, tau_rule=c.tau_rule)
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
    result.save_json(ctx.path(rf.ASSIGNMENT))
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
    result = AssignmentResult.load_json(ctx.path(rf.ASSIGNMENT), n_total=f["features"].shape[1])
    model = ctx.load_dense()
    layer = QPMLayer.from_assignment(result.matrix, result.selected_features, f["features"])
    model.classifier = layer.to(ctx.device)
    return model


def run_finetune(ctx: RunContext) -> dict[str, Any]:
    c = ctx.config
    model = build_qpm_model(ctx)
    before, acc = ctx.finetune(model, "qpm", "QPM")
    layer = dist.unwrap(model).classifier
    ctx.save_model(rf.model_file("qpm"), model, {
        "accuracy": acc, "accuracy_before_finetune": before,
        "class_names": ctx.class_names(),
        "assignment": {str(k): v for k, v in layer.assignment().items()},
        "n_features": c.n_features, "per_class": c.per_class,
    })
    ctx.drop_ckpt("qpm")
    return {"qpm": {"accuracy": acc, "accuracy_before_finetune": before,
                    "n_features": layer.n_features, "per_class": c.per_class}}


def draw_sparse_layer(ctx: RunContext, model_type: str) -> None:
    """The finished model's final layer as a picture (the assignment matrix)."""
    from qpm.explain.figures import plot_assignment
    from qpm.models.checkpoint import load_model

    model, _ = load_model(ctx.path(rf.model_file(model_type)))
    weight, selected = model.classifier.class_feature_weights()
    plot_assignment(weight.detach().numpy(), None if selected is None else selected.numpy(),
                    ctx.class_names(), ctx.path(rf.plot_file(model_type)))


def qpm_stages() -> list[Stage]:
    return [
        Stage("similarities", rf.SIMILARITIES, DENSE_FIELDS, run_similarities,
              validate_similarities, main_only=True),
        Stage("assignment", rf.ASSIGNMENT, ASSIGNMENT_FIELDS, run_assignment,
              validate_assignment, main_only=True),
        Stage("qpm", rf.model_file("qpm"), FINETUNE_FIELDS, run_finetune, validate_model,
              figure=rf.plot_file("qpm"),
              draw=lambda ctx: draw_sparse_layer(ctx, "qpm")),
    ]


register_model_type("qpm", qpm_stages)
