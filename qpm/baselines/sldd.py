"""SLDD (Norrenbrock et al., 2024): glm-saga feature selection, then a sparse glm-saga layer.

1. The reference's one-at-a-time group-lasso selection admits ``n_features`` of the
   backbone's features (:mod:`qpm.baselines.selection`).
2. An elastic-net glm-saga path on them; take the densest solution with at most
   ``2 * per_class`` non-zeros per class on average, and keep only its ``C * per_class``
   largest-magnitude weights (``per_class`` per class on average) and its bias.
   With ``reference_quirks`` it keeps ``C * 5`` whatever ``per_class`` is, as the reference
   does (its ``set_lowest_percent_to_zero(weight, 5)``).
Fine-tuning the backbone under this fixed layer happens in the pipeline stage.
"""

from __future__ import annotations

import numpy as np

from qpm.baselines.glm import GLMConfig, glm_path, standardise
from qpm.baselines.layer import SparseLayer, keep_largest
from qpm.baselines.selection import selection_path
from qpm.errors import QPMError

REFERENCE_KEEP = 5  # weights per class the reference's final pruning keeps, for every k


def prune(weight: np.ndarray, per_class: int, reference_quirks: bool = False) -> np.ndarray:
    """The final pruning: the ``C * per_class`` largest-magnitude weights of ``weight`` (C, n);
    ``C * 5`` with ``reference_quirks``."""
    keep = REFERENCE_KEEP if reference_quirks else per_class
    return keep_largest(weight, weight.shape[0] * keep)


def sldd_sparsify(
    features: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    n_features: int = 50,
    per_class: int = 5,
    cfg: GLMConfig | None = None,
    reference_quirks: bool = False,
) -> SparseLayer:
    """The SLDD layer for training features (N, F) and labels (N,)."""
    cfg = cfg or GLMConfig()
    features = np.asarray(features)
    if n_features > features.shape[1]:
        raise QPMError(
            f"SLDD cannot select {n_features} features from {features.shape[1]}.",
            f"Use --n-features {features.shape[1]} or fewer.",
        )
    st = standardise(features)
    entered = selection_path(features, labels, n_features, n_classes, cfg)
    selection = entered.selection
    X = st.X[:, selection]
    limit = 2 * per_class
    path = glm_path(
        X, labels, n_classes, cfg, stop=lambda w: np.count_nonzero(w) / w.shape[0] > limit
    )
    density = path.nonzeros_per_class()
    ok = np.flatnonzero((density <= limit) & (density > 0))
    if ok.size == 0:
        raise QPMError(
            "The glm-saga path of SLDD never reached a non-zero solution with at most "
            f"{limit} weights per class.",
            "Use more path steps (n_lambdas) or a smaller epsilon.",
        )
    pick = int(ok[np.argmax(density[ok])])
    weight = prune(path.weights[pick], per_class, reference_quirks)
    return SparseLayer(
        selection=selection,
        weight=weight,
        bias=path.biases[pick].astype(np.float64),
        mean=st.mean[selection].astype(np.float64),
        std=st.std[selection].astype(np.float64),
        sparsifier="sldd",
        info={
            "selection_order": entered.order,
            "path_step": pick,
            "path_length": len(path.weights),
            "lambda": path.lambdas[pick],
            "nonzeros_per_class_before_pruning": float(density[pick]),
            "train_acc_glm": path.train_acc[pick],
            **({"reference_quirks": True} if reference_quirks else {}),
        },
    )
