"""The Feature Grounding Loss of CHiQPM (the reference's ``FeatureGroundingLoss.py``).

For each image, the mean of the final layer's inputs over the features its true class does
NOT use, times two, minus their mean over the k features the class uses, divided by the
image's largest absolute input (at least 0.01); averaged over the batch. Minimising it makes
a class's features fire on its images more than the others do, so each feature stands for
what its classes share. The factor two is the reference's ``* (1 + 1)``, which its authors
kept for reproducing the paper; CHiQPM weights the loss with λ = 3 and switches it off at
epoch 30 of each fine-tuning round.
"""

from __future__ import annotations

import torch

DEFAULT_WEIGHT = 3.0  # λ of the reference (finetuning/map_function.py: (3, 30))
OFF_EPOCH = 30  # ... and the epoch of each 40-epoch round at which it is switched off
REFERENCE_EPOCHS = 40


def feature_grounding_loss(values: torch.Tensor, labels: torch.Tensor,
                           weight: torch.Tensor) -> torch.Tensor:
    """The loss for layer inputs (B, n), true classes (B,) and the (C, n) 0/1 class weights."""
    own = weight[labels].to(values.dtype)  # (B, n): the features of each image's class
    count = own.sum(dim=1)
    mean_own = (values * own).sum(dim=1) / count
    mean_rest = (values * (1 - own)).sum(dim=1) / (weight.shape[1] - count) * 2
    scale = values.abs().amax(dim=1).clamp(min=0.01)
    return ((mean_rest - mean_own) / scale).mean()


def off_epoch(epochs: int) -> int:
    """The epoch (counted from 0) of a round of ``epochs`` at which the loss is switched off
    when the whole fine-tuning has ``epochs`` epochs: the reference's 30 of 40, scaled and
    rounded half up (``make run``'s 6 epochs: 5)."""
    return int(OFF_EPOCH * epochs / REFERENCE_EPOCHS + 0.5)
