"""The stages of the baselines, model types "sldd" and "qsenn" (one variant per n and k).

Both re-use the run folder's dense.pt and features.npz:
  sldd:  sldd_layer.npz (glm-saga selection + sparse layer) -> sldd.pt (fine-tuned)
  qsenn: qsenn.pt (rounds of glm-saga + quantisation + fine-tuning)
With ``--reference-quirks`` (a variant of its own, ``sldd-n50-k5-reference-quirks``) they
train as the reference code does: heads that learn the raw mean and std, SLDD pruned to
C * 5 weights, Q-SENN's later rounds on the head's normalised output with the reference's
thresholds, and no batch dropped in fine-tuning (README, "Differences from the reference").
"""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from qpm import run_folder as rf
from qpm.baselines.glm import GLMConfig, require_glm_saga
from qpm.baselines.layer import SparseLayer
from qpm.errors import QPMError
from qpm.io import ArtifactError
from qpm.models.sparse_head import SparseHead
from qpm.pipeline import distributed as dist
from qpm.pipeline.stages import draw
from qpm.pipeline.stages.base import (
    DENSE_FIELDS,
    FINETUNE_ONLY,
    RunContext,
    Stage,
    register_model_type,
    sized,
    validate_model,
)
from qpm.run_folder.config import TrainConfig

SPARSE_FIELDS = DENSE_FIELDS + ("n_features", "per_class")
TUNE_FIELDS = SPARSE_FIELDS + FINETUNE_ONLY
QSENN_ROUNDS = 4


def _quirks(cfg: TrainConfig) -> dict[str, Any]:
    """{"reference_quirks": True} when set, else nothing: default variants and stage
    records stay as they were before the flag existed."""
    return {"reference_quirks": True} if cfg.reference_quirks else {}


def baseline_variant(cfg: TrainConfig) -> dict[str, Any]:
    return {**sized(cfg), **_quirks(cfg)}


def _fields(cfg: TrainConfig, fields: tuple[str, ...]) -> tuple[str, ...]:
    return fields + tuple(_quirks(cfg))


@register_model_type("sldd", variant=baseline_variant, reference_quirks=True)
def sldd_stages(cfg: TrainConfig) -> list[Stage]:
    return [
        Stage("sldd-layer", rf.SLDD_LAYER, _fields(cfg, SPARSE_FIELDS), run_sldd_layer,
              validate_layer, main_only=True, per_variant=True),
        Stage("sldd", rf.model_file("sldd"), _fields(cfg, TUNE_FIELDS), run_sldd,
              validate_model, figure=rf.plot_file("sldd"), draw=draw.sparse_layer("sldd"),
              per_variant=True),
    ]


@register_model_type("qsenn", variant=baseline_variant, reference_quirks=True)
def qsenn_stages(cfg: TrainConfig) -> list[Stage]:
    return [Stage("qsenn", rf.model_file("qsenn"), _fields(cfg, TUNE_FIELDS), run_qsenn_stage,
                  validate_model, figure=rf.plot_file("qsenn"), draw=draw.sparse_layer("qsenn"),
                  per_variant=True)]


def _glm_config(ctx: RunContext) -> GLMConfig:
    return replace(ctx.glm or GLMConfig(), seed=ctx.config.seed)


def _check_sizes(ctx: RunContext) -> None:
    c, f = ctx.config, ctx.features()["features"]
    if c.n_features > f.shape[1]:
        raise QPMError(f"--n-features {c.n_features} is larger than the {f.shape[1]} features "
                       f"of {c.arch}.", f"Use --n-features {f.shape[1]} or fewer.")


def validate_layer(path: Path) -> None:
    layer = SparseLayer.load(path)
    n = layer.selection.shape[0]
    if layer.weight.ndim != 2 or layer.weight.shape[1] != n or layer.bias.shape != (
            layer.weight.shape[0],):
        raise ArtifactError(f"{path} has inconsistent array shapes.", f"Delete {path} and re-run.")


def _head_metrics(head: SparseHead) -> dict[str, Any]:
    w = head.weight.detach().cpu().numpy()
    return {"n_features": int(np.count_nonzero(np.any(w != 0, axis=0))),
            "per_class": float(np.count_nonzero(w, axis=1).mean())}


# --- SLDD -------------------------------------------------------------------------------------


def run_sldd_layer(ctx: RunContext) -> dict[str, Any]:
    from qpm.baselines.sldd import sldd_sparsify

    require_glm_saga()
    _check_sizes(ctx)
    c, f = ctx.config, ctx.features()
    layer = sldd_sparsify(f["features"], f["labels"], len(ctx.class_names()), c.n_features,
                          c.per_class, _glm_config(ctx), c.reference_quirks)
    layer.save(ctx.variant_path(rf.SLDD_LAYER))
    ctx.log(f"SLDD layer: {layer.selection.size} features, glm-saga path step "
            f"{layer.info['path_step'] + 1}/{layer.info['path_length']}")
    return {"sldd": {"sparsifier": "sldd (glm-saga)", **{k: v for k, v in layer.info.items()
                                                         if isinstance(v, (int, float))}}}


def run_sldd(ctx: RunContext) -> dict[str, Any]:
    layer = SparseLayer.load(ctx.variant_path(rf.SLDD_LAYER))
    model = ctx.load_dense()
    model.classifier = layer.head(reference_quirks=ctx.config.reference_quirks).to(ctx.device)
    before, acc = ctx.finetune(model, "sldd", "SLDD")
    head = dist.unwrap(model).classifier
    ctx.save_model(ctx.variant_path(rf.model_file("sldd")), model, {
        "accuracy": acc, "accuracy_before_finetune": before, "sparsifier": "sldd",
        "class_names": ctx.class_names(),
        "assignment": {str(k): v for k, v in head.assignment().items()},
    })
    ctx.drop_ckpt("sldd")
    return {"sldd": {"accuracy": acc, "accuracy_before_finetune": before,
                     "sparsifier": "sldd (glm-saga)", **_head_metrics(head)}}


# --- Q-SENN -----------------------------------------------------------------------------------


def run_qsenn_stage(ctx: RunContext) -> dict[str, Any]:
    from qpm.baselines.qsenn import qsenn_schedule, run_qsenn
    from qpm.pipeline.extraction import extract

    require_glm_saga()
    _check_sizes(ctx)
    c, f, data = ctx.config, ctx.features(), ctx.inputs()
    model = ctx.load_dense()
    base = ctx.fit_settings(finetune=True)
    schedule = qsenn_schedule(base.epochs, QSENN_ROUNDS)
    rounds: list[dict[str, Any]] = []

    def extract_features(layer: SparseLayer | None):
        if layer is None:
            return f["features"], f["labels"]
        out = extract(model, data.train_eval, batch_size=c.batch_size * 2, workers=c.workers,
                      logits=False, features=True, desc="qsenn features")
        if not c.reference_quirks:
            return out.features, out.labels
        # the reference fits its later rounds on its head's output (on the CPU, as the features)
        head = copy.deepcopy(dist.unwrap(model).classifier).cpu()
        with torch.no_grad():
            return head.layer_input(torch.from_numpy(out.features)).numpy(), out.labels

    def finetune(layer: SparseLayer, r: int, scale: float, epochs: int) -> dict[str, Any]:
        # Under torchrun every rank ran glm-saga; train (and key the checkpoint) on rank 0's.
        layer = dist.broadcast_object(layer)
        model.classifier = layer.head(reference_quirks=c.reference_quirks).to(ctx.device)
        settings = replace(base, epochs=epochs, lr=base.lr * scale)
        key = {"round": r, "selection": layer.selection.tolist(),
               "weight_sum": round(float(np.abs(layer.weight).sum()), 6)}
        ctx.train(model, f"qsenn-round{r + 1}", settings, key=key)
        acc = ctx.evaluate(model, f"qsenn round {r + 1} test")
        ctx.log(f"Q-SENN round {r + 1}: test accuracy {acc:.2f}%")
        rounds.append({"round": r + 1, "lr_scale": scale, "epochs": epochs, "accuracy": acc,
                       "v": layer.info["v"], "train_acc_glm": layer.info["train_acc_glm"],
                       "nonzeros_per_class_before_quantising":
                           layer.info["nonzeros_per_class_before_quantising"]})
        return {"accuracy": acc}

    run_qsenn(extract_features, finetune, len(ctx.class_names()), c.per_class, c.n_features,
              schedule, cfg=_glm_config(ctx), log=ctx.log, reference_quirks=c.reference_quirks)
    head = dist.unwrap(model).classifier
    acc = rounds[-1]["accuracy"]
    ctx.save_model(ctx.variant_path(rf.model_file("qsenn")), model, {
        "accuracy": acc, "sparsifier": "qsenn", "rounds": rounds,
        "class_names": ctx.class_names(),
        "assignment": {str(k): v for k, v in head.assignment().items()},
    })
    for r in range(QSENN_ROUNDS):
        ctx.drop_ckpt(f"qsenn-round{r + 1}")
    return {"qsenn": {"accuracy": acc, "sparsifier": "qsenn (glm-saga, 4 rounds, ternary)",
                      "rounds": rounds, **_head_metrics(head)}}
