"""The training stages' optimizer: SGD with StepLR (QPM), or schedule-free AdamW (DINO-QPM).

QPM's reference trains with SGD (momentum, weight decay) and a step schedule, a larger
learning rate on the dense classifier. DINO-QPM's configs name ``adamw_schedulefree``: the
``schedulefree`` package's AdamW, no schedule, the same learning rate for every parameter
group. A schedule-free optimizer trains one sequence of weights and evaluates another (an
average): :func:`for_training` and :func:`for_evaluation` switch the model's parameters
between the two, and a finished stage leaves its model with the evaluation weights, as the
reference's last test pass does.
"""

from __future__ import annotations

import torch
from torch import nn

from qpm.errors import QPMError

SCHEDULE_FREE = "adamw-schedulefree"


def make_optimizer(model: nn.Module, optimizer: str, lr: float, momentum: float,
                   weight_decay: float, step_size: int, gamma: float,
                   classifier_lr: float | None = None):
    """(optimizer, scheduler) over the model's trainable parameters; the classifier gets
    ``classifier_lr`` (None: ``lr``). The scheduler of a schedule-free optimizer is a
    constant one, so checkpoints hold the same three objects either way."""
    head = [p for p in model.classifier.parameters() if p.requires_grad]
    head_ids = {id(p) for p in head}
    body = [p for p in model.parameters() if p.requires_grad and id(p) not in head_ids]
    groups = [g for g in ({"params": body, "lr": lr},
                          {"params": head, "lr": classifier_lr or lr}) if g["params"]]
    if not groups:
        raise QPMError("The model has no trainable parameters.",
                       "Train an adapter on a frozen backbone (--adapter-layers 1 or more).")
    if optimizer == "sgd":
        opt = torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
        return opt, torch.optim.lr_scheduler.StepLR(opt, step_size, gamma)
    if optimizer == SCHEDULE_FREE:
        schedulefree = require_schedulefree()
        opt = schedulefree.AdamWScheduleFree(groups, lr=lr, weight_decay=weight_decay)
        return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    raise QPMError(f"Unknown optimizer {optimizer!r}.", f"Use sgd or {SCHEDULE_FREE}.")


def require_schedulefree():
    try:
        import schedulefree
    except ImportError:
        raise QPMError(f"--optimizer {SCHEDULE_FREE} needs the schedulefree package, which is "
                       "not installed.", "Install it with `pip install schedulefree` (or "
                       "`pip install qpm[frozen]`), or pass --optimizer sgd.") from None
    return schedulefree


def for_training(optimizer: torch.optim.Optimizer) -> None:
    """The parameters a schedule-free optimizer steps (a no-op for SGD)."""
    if hasattr(optimizer, "train") and callable(optimizer.train):
        optimizer.train()


def for_evaluation(optimizer: torch.optim.Optimizer) -> None:
    """The parameters a schedule-free optimizer evaluates with (a no-op for SGD)."""
    if hasattr(optimizer, "eval") and callable(optimizer.eval):
        optimizer.eval()
