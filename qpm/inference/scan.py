"""One pass of a loaded model over a dataset: what the explanations choose images from."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from qpm.explain.examples import example_quality
from qpm.explain.figures import displayable


@dataclass
class Scan:
    logits: np.ndarray  # (N, C)
    labels: np.ndarray  # (N,)
    pooled: np.ndarray  # (N, n) pooled activation of the layer's selected features
    quality: np.ndarray  # (N,) how well the image shows its class's features


@torch.no_grad()
def scan_dataset(model, dataset: Dataset, batch_size: int = 128) -> Scan:
    """Logits, labels, selected-feature activations and example quality of every image."""
    weight, sel = model.layer()
    idx = torch.as_tensor(sel, device=model.device)
    columns = [model.class_columns(c, weight=weight) for c in range(len(model.class_names))]
    model.eval()
    logits, labels, pooled, quality = [], [], [], []
    for x, y in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        out = model.network(x.to(model.device))
        maps = out.feature_maps.index_select(1, idx).float().cpu().numpy()
        feats = out.features.index_select(1, idx).float().cpu().numpy()
        logits.append(out.logits.float().cpu().numpy())
        labels.append(y.numpy())
        pooled.append(feats)
        quality.append(example_quality(maps, feats, [columns[int(c)] for c in y]))
    return Scan(np.concatenate(logits), np.concatenate(labels), np.concatenate(pooled),
                np.concatenate(quality))


@torch.no_grad()
def render(model, dataset: Dataset, indices: list[int]) -> tuple[list[np.ndarray],
                                                                   list[np.ndarray]]:
    """Displayable images and their (n, h, w) selected-feature maps for ``indices``."""
    if not indices:
        return [], []
    _, sel = model.layer()
    x = torch.stack([dataset[i][0] for i in indices])
    idx = torch.as_tensor(sel, device=model.device)
    maps = model.network(x.to(model.device)).feature_maps.index_select(1, idx)
    images = [displayable(im.numpy(), model.mean, model.std) for im in x]
    return images, [m.float().cpu().numpy() for m in maps]
