"""Interpretability and accuracy metrics, each a plain function over numpy arrays, computed
as the QPM reference code (ThomasNorr/QPM, evaluation/) computes them.

Conventions: ``weight`` is the final layer's (C, F) matrix (classes x features), ``features``
are the final layer's input (N, F): pooled features for a dense model, the normalised
selected features for a sparse one; ``feature_maps`` are (N, F, H, W). Every function
documents its exact definition; :mod:`qpm.metrics.model_eval` combines them for one model.
"""

from qpm.metrics.alignment import ImageAttributes, cub_alignment, read_cub_image_attributes
from qpm.metrics.basic import (
    accuracy,
    features_per_class,
    forced_pairs_sharing,
    n_features,
    pairs_sharing,
)
from qpm.metrics.diversity import diversity_at_k, sid_at_k
from qpm.metrics.features import class_independence, contrastiveness, correlation, dependence
from qpm.metrics.grounding import (
    class_similarity_from_weights,
    load_cub_class_attributes,
    structural_grounding,
)

__all__ = [
    "ImageAttributes",
    "accuracy",
    "class_independence",
    "class_similarity_from_weights",
    "contrastiveness",
    "correlation",
    "cub_alignment",
    "dependence",
    "diversity_at_k",
    "features_per_class",
    "forced_pairs_sharing",
    "load_cub_class_attributes",
    "n_features",
    "pairs_sharing",
    "read_cub_image_attributes",
    "sid_at_k",
    "structural_grounding",
]
