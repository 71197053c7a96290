"""The CHiQPM model type: similarities.npz (shared) -> assignment.json (preset chiqpm) ->
fine-tuned chiqpm.pt, as the CHiQPM reference's ``finetuning/chiqpm.py`` does it.

The assignment is QPM's with the forced class pairs of the chiqpm preset (the similarities
and assignment stages are QPM's, :mod:`.qpm`). The final layer is QPM's with a ReLU on the
normalised selected features (:class:`~qpm.models.qpm_layer.ChiQPMLayer`; the normalisation
stays frozen). Fine-tuning runs the reference's four rounds of the Q-SENN schedule (lr x 0.9
per round; 10, 10, 10 and then all fine-tuning epochs, capped as for Q-SENN on shorter runs),
each with a fresh optimizer, with cross-entropy, the feature-diversity loss and the Feature
Grounding Loss (λ = 3) until its switch-off epoch: 30 of each round at the paper's 40
fine-tuning epochs, scaled to the run's (``make run``'s 6: epoch 5, so the last epoch of each
6-epoch round runs without it).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from qpm import run_folder as rf
from qpm.errors import QPMError
from qpm.models.grounding_loss import DEFAULT_WEIGHT, off_epoch
from qpm.models.qpm_layer import ChiQPMLayer
from qpm.pipeline import distributed as dist
from qpm.pipeline.stages.base import RunContext, Stage, register_model_type
from qpm.pipeline.stages.qpm import assigned_stages, build_qpm_model, forced_pairs, qpm_variant
from qpm.run_folder.config import TrainConfig

ROUNDS = 4  # the reference's `for iteration_epoch in range(4)`


@register_model_type("chiqpm", variant=qpm_variant)
def chiqpm_stages(cfg: TrainConfig) -> list[Stage]:
    if not forced_pairs(cfg):
        raise QPMError(f"--model-type chiqpm needs a preset with forced class pairs; preset "
                       f"{cfg.preset} has none.", "Use --preset chiqpm (its default).")
    return assigned_stages(cfg, "chiqpm", run_chiqpm)


def chiqpm_schedule(ft_epochs: int) -> list[tuple[int, float]]:
    """(epochs, lr scale) of each round: the Q-SENN schedule the reference uses for CHiQPM."""
    from qpm.baselines.qsenn import qsenn_schedule

    return qsenn_schedule(ft_epochs, ROUNDS)


def run_chiqpm(ctx: RunContext) -> dict[str, Any]:
    c = ctx.config
    model = build_qpm_model(ctx, ChiQPMLayer)
    before = ctx.evaluate(model, "chiqpm test (before fine-tuning)")
    ctx.log(f"CHiQPM layer before fine-tuning: test accuracy {before:.2f}%")
    base = ctx.fit_settings(finetune=True)
    off = off_epoch(base.epochs)
    rounds: list[dict[str, Any]] = []
    for r, (epochs, scale) in enumerate(chiqpm_schedule(base.epochs)):
        settings = replace(base, epochs=epochs, lr=base.lr * scale, grounding=DEFAULT_WEIGHT,
                           grounding_off=off)
        ctx.train(model, f"chiqpm-round{r + 1}", settings, key={"round": r})
        acc = ctx.evaluate(model, f"chiqpm round {r + 1} test")
        ctx.log(f"CHiQPM round {r + 1}/{ROUNDS} ({epochs} epochs, lr x {scale:.3g}, grounding "
                f"loss x {DEFAULT_WEIGHT:g} in the first {min(off, epochs)}): test accuracy "
                f"{acc:.2f}%")
        rounds.append({"round": r + 1, "epochs": epochs, "lr_scale": scale,
                       "grounding_epochs": min(off, epochs), "accuracy": acc})
    acc = rounds[-1]["accuracy"]
    layer = dist.unwrap(model).classifier
    grounding = {"weight": DEFAULT_WEIGHT, "off_epoch": off}
    ctx.save_model(ctx.variant_path(rf.model_file("chiqpm")), model, {
        "accuracy": acc, "accuracy_before_finetune": before, "rounds": rounds,
        "grounding_loss": grounding, "rho": c.rho,
        "class_names": ctx.class_names(),
        "assignment": {str(k): v for k, v in layer.assignment().items()},
        "n_features": c.n_features, "per_class": c.per_class,
    })
    for r in range(ROUNDS):
        ctx.drop_ckpt(f"chiqpm-round{r + 1}")
    return {"chiqpm": {"accuracy": acc, "accuracy_before_finetune": before,
                       "n_features": layer.n_features, "per_class": c.per_class, "rho": c.rho,
                       "rounds": rounds, "grounding_loss": grounding}}
