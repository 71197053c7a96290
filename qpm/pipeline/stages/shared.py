"""The stages every model type shares: the dense model (dense.pt) and its features on the
training and test images (features.npz, with the locality bias b). On a frozen backbone the
dense stage trains the adapter and its classifier, reading the token cache."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from qpm import run_folder as rf
from qpm.io import save_npz
from qpm.models.adapter import AdapterSpec, create_model
from qpm.pipeline import distributed as dist
from qpm.pipeline.bias import locality_bias
from qpm.pipeline.extraction import extract
from qpm.pipeline.stages.base import (
    DENSE_FIELDS,
    RunContext,
    Stage,
    validate_features,
    validate_model,
)


def run_dense(ctx: RunContext) -> dict[str, Any]:
    c, data = ctx.config, ctx.data()
    # The initial weights come from the global generator: seed it so --seed decides them,
    # whatever ran before in this process.
    torch.manual_seed(c.seed)
    model = create_model(c.arch, c.weights, c.reduced_strides, data.in_channels,
                         data.num_classes, pretrained_head=not c.dense_training,
                         adapter=AdapterSpec.of(c), frozen=bool(c.frozen_backbone))
    model = ctx.feed(model.to(ctx.device))
    ctx.inputs(model)  # a frozen backbone: its outputs computed (or found) once, here
    if c.dense_training:
        ctx.train(model, "dense", ctx.fit_settings(finetune=False))
    else:
        ctx.log(f"dense: no dense training; the {c.weights} model with its classifier is the "
                "dense model")
    acc = ctx.evaluate(model, "dense test")
    ctx.log(f"dense test accuracy {acc:.2f}%")
    ctx.save_model(ctx.path(rf.DENSE), model, {"accuracy": acc, "class_names": data.class_names,
                                       "dataset": c.dataset, "image_size": data.image_size})
    ctx.drop_ckpt("dense")
    return {"dense": {"accuracy": acc}}


def run_features(ctx: RunContext) -> dict[str, Any]:
    data, bs, workers = ctx.inputs(), ctx.config.batch_size * 2, ctx.config.workers
    model = ctx.load_dense()
    # float32 throughout (no bf16 autocast): A, R and b come from these features.
    train = extract(model, data.train_eval, batch_size=bs, workers=workers, features=True,
                    locality=True, desc="features train", autocast=False)
    test = extract(model, data.test, batch_size=bs, workers=workers, features=True,
                   desc="features test", autocast=False)
    b = locality_bias(train.locality, train.edge)
    if ctx.is_main:
        save_npz(ctx.path(rf.FEATURES), features=train.features, labels=train.labels,
                 train_logits=train.logits, test_features=test.features, test_labels=test.labels,
                 test_logits=test.logits, b=b, locality=train.locality, edge=train.edge,
                 map_size=np.asarray(train.map_size, dtype=np.int64),
                 class_names=np.asarray(data.class_names, dtype=np.str_))
    dist.barrier()
    ctx._features = None
    return {"dense": {"accuracy": test.accuracy, "train_accuracy": train.accuracy}}


def shared_stages() -> list[Stage]:
    return [
        Stage("dense", rf.DENSE, DENSE_FIELDS, run_dense, validate_model),
        Stage("features", rf.FEATURES, DENSE_FIELDS, run_features, validate_features),
    ]
