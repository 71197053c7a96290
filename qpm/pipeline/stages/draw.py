"""The one place training draws: a finished sparse model's final layer as a picture.

A stage names its picture in ``Stage.figure`` and this function in ``Stage.draw``; the runner
calls it only after the stage is recorded (and again when the picture is missing), and a
drawing that fails costs one line, never the stage's result. Nothing else in the pipeline
imports :mod:`qpm.explain`.
"""

from __future__ import annotations

from collections.abc import Callable

from qpm import run_folder as rf
from qpm.pipeline.stages.base import RunContext


def sparse_layer(model_type: str) -> Callable[[RunContext], None]:
    """Draw ``model_type``'s assignment matrix next to its model file."""

    def draw(ctx: RunContext) -> None:
        from qpm.explain.figures import plot_assignment
        from qpm.models.checkpoint import load_model

        model, _ = load_model(ctx.variant_path(rf.model_file(model_type)))
        weight, selected = model.classifier.class_feature_weights()
        plot_assignment(weight.detach().numpy(), None if selected is None else selected.numpy(),
                        ctx.class_names(), ctx.variant_path(rf.plot_file(model_type)))

    return draw
