"""The feature-diversity loss (Norrenbrock et al.), used for dense training and fine-tuning.

Each feature map is softmaxed over its locations and scaled by the feature's mean activation
relative to the image's most active feature; the maps of the predicted class are weighted by
that class's L2-normalised absolute weights. The loss is minus the sum over locations of the
per-location maximum over features, averaged over the batch and scaled by ``beta``: it is
lowest when the features a class uses light up at different places.
"""

from __future__ import annotations

import torch

DEFAULT_BETA = 0.196  # the papers' value for ResNets


def relative_softmax_maps(feature_maps: torch.Tensor) -> torch.Tensor:
    """Spatial softmax of each map times mean(map) / max over features of mean(map)."""
    b, f = feature_maps.shape[:2]
    flat = feature_maps.reshape(b, f, -1)
    means = flat.mean(dim=2)
    relative = means / means.amax(dim=1, keepdim=True).clamp(min=1e-6)
    return (torch.softmax(flat, dim=2) * relative.unsqueeze(2)).view_as(feature_maps)


def diversity_loss(
    feature_maps: torch.Tensor,
    logits: torch.Tensor,
    weight: torch.Tensor,
    beta: float = DEFAULT_BETA,
) -> torch.Tensor:
    """The loss for maps (B, n, H, W), logits (B, C) and class weights (C, n)."""
    if beta == 0:
        return feature_maps.new_zeros(())
    w = weight.abs()[logits.argmax(dim=1)]  # (B, n): the predicted class's weights
    w = w / (w.norm(dim=1, keepdim=True) + 1e-5)
    weighted = relative_softmax_maps(feature_maps).flatten(2) * w.unsqueeze(2)
    return -beta * weighted.amax(dim=1).sum() / feature_maps.shape[0]
