"""The one inference pass: logits, pooled features and the locality statistics, no augmentation.

Used for test accuracy, for features.npz, and by the baselines. Under torchrun each rank
runs its shard and the rows come back in dataset order on every rank.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from qpm.pipeline import distributed as dist


@dataclass
class Extracted:
    labels: np.ndarray  # (N,)
    logits: np.ndarray | None = None  # (N, C)
    features: np.ndarray | None = None  # (N, F) pooled
    # Locality statistics, summed over images with each image's relative activation as weight:
    locality: np.ndarray | None = None  # (F,) mean of max(spatial softmax)
    edge: np.ndarray | None = None  # (F,) mean of "the map's maximum lies on the border"
    map_size: tuple[int, int] | None = None

    @property
    def accuracy(self) -> float:
        """Top-1 accuracy in percent (needs logits)."""
        return float(100.0 * np.mean(self.logits.argmax(1) == self.labels))


def on_border(maps: torch.Tensor) -> torch.Tensor:
    """(B, F) 1.0 where the map's maximum is in the first/last row or column."""
    h, w = maps.shape[2:]
    flat_arg = maps.flatten(2).argmax(dim=2)
    row, col = flat_arg // w, flat_arg % w
    return ((row == 0) | (row == h - 1) | (col == 0) | (col == w - 1)).float()


def locality_terms(maps: torch.Tensor, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-batch sums of (max spatial softmax) and (border maximum), each weighted by the
    feature's share of the image's total activation."""
    share = features / features.sum(dim=1, keepdim=True).clamp(min=1e-12)
    peak = torch.softmax(maps.flatten(2).float(), dim=2).amax(dim=2)
    return (peak * share).sum(0), (on_border(maps) * share).sum(0)


@torch.no_grad()
def extract(
    model: nn.Module,
    dataset: Dataset,
    *,
    batch_size: int = 64,
    workers: int = 0,
    logits: bool = True,
    features: bool = False,
    locality: bool = False,
    desc: str = "extract",
    autocast: bool = True,
) -> Extracted:
    """Run ``model`` (on the context's device) over ``dataset`` in order, in eval mode.

    ``autocast=False`` keeps the whole pass in float32 on a GPU: the features A, R and b are
    computed from must be, since bf16 moves R by about 1e-2 and so the penalised pairs.
    """
    ctx = dist.get_context()
    loader = dist.make_loader(dataset, batch_size, shuffle=False, workers=workers, pad=False)
    was_training = model.training
    dist.channels_last(model, ctx.device)  # in place; GPU only
    model.eval()
    outs: dict[str, list[torch.Tensor]] = {"labels": [], "logits": [], "features": []}
    loc_sum = edge_sum = None
    map_size = None
    for images, labels in dist.main_only(loader, desc=desc, leave=False, dynamic_ncols=True):
        images = dist.channels_last(images.to(ctx.device, non_blocking=True), ctx.device)
        with dist.autocast_context(ctx.device, enabled=autocast):
            out = model(images)
        outs["labels"].append(labels.cpu())
        if logits:
            outs["logits"].append(out.logits.float().cpu())
        if features:
            outs["features"].append(out.features.float().cpu())
        if locality:
            loc, edge = locality_terms(out.feature_maps.float(), out.features.float())
            loc_sum = loc if loc_sum is None else loc_sum + loc
            edge_sum = edge if edge_sum is None else edge_sum + edge
            map_size = tuple(int(s) for s in out.feature_maps.shape[2:])
    model.train(was_training)

    idx = dist.loader_indices(loader)
    total = len(dataset)

    def gathered(name: str) -> np.ndarray | None:
        parts = outs[name]
        if not parts:
            return None
        local = torch.cat(parts)
        return dist.gather_in_order(local, idx, total).numpy()

    result = Extracted(labels=gathered("labels").astype(np.int64), logits=gathered("logits"),
                       features=gathered("features"))
    if locality and loc_sum is not None:
        result.locality = (dist.all_reduce_sum(loc_sum.cpu().double()) / total).numpy()
        result.edge = (dist.all_reduce_sum(edge_sum.cpu().double()) / total).numpy()
        result.map_size = map_size
    return result


def accuracy(model: nn.Module, dataset: Dataset, batch_size: int = 64, workers: int = 0,
             desc: str = "evaluate") -> float:
    """Top-1 test accuracy in percent."""
    return extract(model, dataset, batch_size=batch_size, workers=workers, desc=desc).accuracy
