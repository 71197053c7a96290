"""Compute every metric for one trained model: one pass over the test set (accuracy, SID@5,
diversity@5) and one over the training images (the feature metrics), as in the reference."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from qpm.metrics.alignment import ImageAttributes, cub_alignment
from qpm.metrics.basic import (
    accuracy,
    features_per_class,
    forced_pairs_sharing,
    n_features,
    pairs_sharing,
)
from qpm.metrics.diversity import sid_per_sample
from qpm.metrics.features import class_independence, contrastiveness, correlation, dependence
from qpm.metrics.grounding import structural_grounding
from qpm.metrics.plausibility import plausibility_per_sample

METRIC_NAMES = (
    ("accuracy", "Accuracy (%)"),
    ("n_features", "Features"),
    ("per_class", "Features / class"),
    ("pairs_sharing", "Class pairs sharing k-1"),
    ("forced_pairs_sharing", "Forced pairs sharing k-1"),
    ("sid@5", "SID@5"),
    ("diversity@5", "Diversity@5 (Q-SENN)"),
    ("class_independence", "Class-Independence"),
    ("contrastiveness", "Contrastiveness"),
    ("correlation", "Correlation"),
    ("dependence", "Dependence"),
    ("structural_grounding", "Structural Grounding"),
    ("alignment", "Alignment"),
    ("plausibility", "Plausibility"),
)


def head_weights(model) -> tuple[np.ndarray, np.ndarray | None]:
    """(C, n) final-layer weights and the n backbone features they use (None: all)."""
    weight, used = model.classifier.class_feature_weights()
    w = weight.detach().cpu().numpy().astype(np.float64)
    return w, None if used is None else used.detach().cpu().numpy()


def head_input(classifier, features: torch.Tensor) -> torch.Tensor:
    """What the final layer multiplies with its weights, for pooled backbone features (B, F).

    A dense head takes the pooled features as they are; a sparse head (QPM, SLDD, Q-SENN)
    its selected features normalised with its effective (mean, std), CHiQPM's after a ReLU.
    The reference computes Correlation, Dependence and the other feature metrics on exactly
    this input.
    """
    layer_input = getattr(classifier, "layer_input", None)
    if layer_input is None:
        return features
    return layer_input(features)


@torch.no_grad()
def collect_outputs(model, dataset: Dataset, device, batch_size: int, used,
                    weight: np.ndarray | None, k: int = 5, masks: Dataset | None = None
                    ) -> dict[str, Any]:
    """One pass over ``dataset`` in order: logits, labels, the pooled ``used`` features
    (None: all) and the head's input; with ``weight`` also the mean SID@k and diversity@k of
    the samples that count (else None), and with ``masks`` (the images' segmentation masks,
    same order) Plausibility."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    mask_batches = (iter(DataLoader(masks, batch_size=batch_size, shuffle=False))
                    if masks is not None and weight is not None else None)
    model.eval()
    logits, labels, feats, inputs, plausible = [], [], [], [], []
    sid: dict[str, list[np.ndarray]] = {"mean_abs": [], "none": []}
    idx = None if used is None else torch.as_tensor(used, dtype=torch.long, device=device)
    for images, y in loader:
        out = model(images.to(device))
        pooled = out.features if idx is None else out.features.index_select(1, idx)
        logits.append(out.logits.float().cpu())
        labels.append(y.cpu())
        feats.append(pooled.float().cpu())
        inputs.append(head_input(model.classifier, out.features).float().cpu())
        if weight is not None:
            maps = out.feature_maps if idx is None else out.feature_maps.index_select(1, idx)
            maps = maps.float().cpu().numpy()
            pred = out.logits.argmax(1).cpu().numpy()
            for normalise, values in sid.items():
                values.append(sid_per_sample(maps, weight, pred, k, normalise))
            if mask_batches is not None:
                plausible.append(plausibility_per_sample(
                    maps, weight, pred, on_grid(next(mask_batches)[0], maps.shape[2:])))

    def mean(values: list[np.ndarray]) -> float | None:
        v = np.concatenate(values) if values else np.zeros(0)
        return float(v.mean()) if v.size else None

    return {
        "logits": torch.cat(logits).numpy(),
        "labels": torch.cat(labels).numpy(),
        "features": torch.cat(feats).numpy(),
        "head_input": torch.cat(inputs).numpy(),
        "sid": mean(sid["mean_abs"]),
        "diversity": mean(sid["none"]),
        "plausibility": mean(plausible),
    }


def on_grid(masks: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """(B, 1, H, W) masks in [0, 1] -> (B, h, w) booleans on a map grid: the cells whose
    bilinear sample (no antialiasing, as OpenCV's INTER_LINEAR) touches the object: the
    reference's ``cv2.resize(mask) > 0``."""
    small = torch.nn.functional.interpolate(masks.float(), size=tuple(size), mode="bilinear",
                                            align_corners=False)
    return (small[:, 0] > 0).cpu().numpy()


def evaluate_model(
    model,
    train: Dataset,
    test: Dataset,
    device: torch.device | str = "cpu",
    batch_size: int = 128,
    class_attributes: np.ndarray | None = None,
    k: int = 5,
    seed: int = 0,
    image_attributes: ImageAttributes | None = None,
    test_outputs: dict[str, Any] | None = None,
    forced_pairs: np.ndarray | None = None,
    segmentations: Dataset | None = None,
) -> dict[str, Any]:
    """Every metric of :data:`METRIC_NAMES` for ``model`` (a Backbone with its head).

    Accuracy, SID@k and diversity@k use the test set. Class-Independence, Contrastiveness,
    Correlation, Dependence and Alignment use the training images (evaluation transform) as
    the final layer sees them (:func:`head_input`); Dependence uses the predicted classes
    there. Structural Grounding needs ``class_attributes`` and Alignment
    ``image_attributes`` (CUB); each is None without. Plausibility needs ``segmentations``
    (the test images' masks, :func:`qpm.metrics.cub.segmentations_for`). A dict passed as
    ``test_outputs`` receives the test pass (``logits``, ``labels``, ``head_input``: what
    conformal prediction sets are computed from). The class pairs sharing k-1 features are
    counted for binary layers with k per class, and of them the ``forced_pairs`` (CHiQPM's,
    (P, 2)) when given.
    """
    weight, used = head_weights(model)
    te = collect_outputs(model, test, device, batch_size, used, weight, k, segmentations)
    if test_outputs is not None:
        test_outputs.update(te)
    tr = collect_outputs(model, train, device, batch_size, used, None, k)
    x, y = tr["head_input"], tr["labels"]
    return {
        "accuracy": 100.0 * accuracy(te["logits"], te["labels"]),
        "n_features": n_features(weight),
        "per_class": features_per_class(weight),
        "pairs_sharing": pairs_sharing(weight),
        "forced_pairs_sharing": None if forced_pairs is None
        else forced_pairs_sharing(weight, forced_pairs),
        "forced_pairs": None if forced_pairs is None else int(len(forced_pairs)),
        "sid@5": te["sid"],
        "diversity@5": te["diversity"],
        "class_independence": class_independence(x, y),
        "contrastiveness": contrastiveness(x, seed=seed),
        "correlation": correlation(x),
        "dependence": dependence(x, weight, tr["logits"].argmax(1)),
        "structural_grounding": None
        if class_attributes is None
        else structural_grounding(weight, class_attributes),
        "alignment": None if image_attributes is None else cub_alignment(x, image_attributes),
        "plausibility": te["plausibility"],
    }


def format_table(results: dict[str, dict[str, Any]], keys: tuple[str, ...] | None = None
                 ) -> str:
    """A plain-text table: one row per metric (those of ``keys``, default all), one column
    per model type."""
    names = list(results)
    rows = [["Metric", *names]]
    for key, label in METRIC_NAMES:
        if keys is not None and key not in keys:
            continue
        row = [label]
        for n in names:
            v = results[n].get(key)
            if v is None:
                row.append("n/a")
            elif key == "forced_pairs_sharing":
                row.append(f"{int(v)} of {results[n].get('forced_pairs')}")
            elif key in ("n_features", "pairs_sharing"):
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
