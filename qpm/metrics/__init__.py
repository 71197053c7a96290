"""Interpretability and accuracy metrics, each a plain function over numpy arrays.

Conventions: ``weight`` is the final layer's (C, F) matrix (classes x features), ``features``
are pooled feature activations (N, F), ``feature_maps`` are (N, F, H, W). Every function
documents its exact definition; :mod:`qpm.metrics.report` combines them for one model.
"""

from qpm.metrics.basic import accuracy, features_per_class, n_features
from qpm.metrics.diversity import sid_at_k
from qpm.metrics.features import class_independence, contrastiveness, correlation
from qpm.metrics.grounding import (
    class_similarity_from_weights,
    load_cub_class_attributes,
    structural_grounding,
)

__all__ = [
    "accuracy",
    "class_independence",
    "class_similarity_from_weights",
    "contrastiveness",
    "correlation",
    "features_per_class",
    "load_cub_class_attributes",
    "n_features",
    "sid_at_k",
    "structural_grounding",
]
