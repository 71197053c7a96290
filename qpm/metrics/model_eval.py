"""Compute every metric for one trained model: one pass over the test set (accuracy, SID@5)
and one over the training images (the feature metrics), streaming the feature maps."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from qpm.metrics.basic import accuracy, features_per_class, n_features
from qpm.metrics.diversity import sid_at_k
from qpm.metrics.features import class_independence, contrastiveness, correlation
from qpm.metrics.grounding import structural_grounding

METRIC_NAMES = (
    ("accuracy", "Accuracy (%)"),
    ("n_features", "Features"),
    ("per_class", "Features / class"),
    ("sid@5", "SID@5"),
    ("class_independence", "Class-Independence"),
    ("contrastiveness", "Contrastiveness"),
    ("correlation", "Correlation"),
    ("structural_grounding", "Structural Grounding"),
)


def head_weights(model) -> tuple[np.ndarray, np.ndarray | None]:
    """(C, n) final-layer weights and the n backbone features they use (None: all)."""
    weight, used = model.classifier.class_feature_weights()
    w = weight.detach().cpu().numpy().astype(np.float64)
    return w, None if used is None else used.detach().cpu().numpy()


@torch.no_grad()
def collect_outputs(model, dataset: Dataset, device, batch_size: int, used,
                    weight: np.ndarray | None, k: int = 5) -> dict[str, Any]:
    """Logits, labels and pooled ``used`` features (None: all) over ``dataset`` in order;
    with ``weight`` also the mean SID@k of the images that count (else None)."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    model.eval()
    logits, labels, feats = [], [], []
    sid_total, sid_count = 0.0, 0
    enough = None if weight is None else np.count_nonzero(weight, axis=1) >= k
    idx = None if used is None else torch.as_tensor(used, dtype=torch.long, device=device)
    for images, y in loader:
        out = model(images.to(device))
        maps = out.feature_maps if idx is None else out.feature_maps.index_select(1, idx)
        pooled = out.features if idx is None else out.features.index_select(1, idx)
        logits.append(out.logits.float().cpu())
        labels.append(y.cpu())
        feats.append(pooled.float().cpu())
        if weight is not None:
            pred = out.logits.argmax(1).cpu().numpy()
            count = int(enough[pred].sum())
            if count:
                sid = sid_at_k(maps.float().cpu().numpy(), weight, pred, k=k)
                sid_total += sid * count
                sid_count += count
    return {
        "logits": torch.cat(logits).numpy(),
        "labels": torch.cat(labels).numpy(),
        "features": torch.cat(feats).numpy(),
        "sid": sid_total / sid_count if sid_count else None,
    }


def evaluate_model(
    model,
    train: Dataset,
    test: Dataset,
    device: torch.device | str = "cpu",
    batch_size: int = 128,
    class_attributes: np.ndarray | None = None,
    k: int = 5,
    seed: int = 0,
) -> dict[str, Any]:
    """Every metric of :data:`METRIC_NAMES` for ``model`` (a Backbone with its head).

    Accuracy and SID@k use the test set; Class-Independence, Contrastiveness and Correlation
    the training images (evaluation transform) restricted to the features the head uses;
    Structural Grounding needs ``class_attributes`` (CUB) and is None otherwise.
    """
    weight, used = head_weights(model)
    te = collect_outputs(model, test, device, batch_size, used, weight, k)
    tr = collect_outputs(model, train, device, batch_size, used, None, k)
    x, y = tr["features"], tr["labels"]
    return {
        "accuracy": 100.0 * accuracy(te["logits"], te["labels"]),
        "n_features": n_features(weight),
        "per_class": features_per_class(weight),
        "sid@5": te["sid"],
        "class_independence": class_independence(x, y),
        "contrastiveness": contrastiveness(x, seed=seed),
        "correlation": correlation(x),
        "structural_grounding": None
        if class_attributes is None
        else structural_grounding(weight, class_attributes),
    }


def format_table(results: dict[str, dict[str, Any]]) -> str:
    """A plain-text table: one row per metric, one column per model type."""
    names = list(results)
    rows = [["Metric", *names]]
    for key, label in METRIC_NAMES:
        row = [label]
        for n in names:
            v = results[n].get(key)
            if v is None:
                row.append("n/a")
            elif key in ("n_features",):
                row.append(str(int(v)))
            elif key == "accuracy":
                row.append(f"{v:.2f}")
            else:
                row.append(f"{v:.3f}" if isinstance(v, float) else str(v))
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in
                       enumerate(zip(r, widths, strict=True))) for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)
