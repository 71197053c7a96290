"""Using a trained model: ``qpm.load(run_dir)`` gives a ``torch.nn.Module`` whose forward
returns logits, with ``predict``, ``explain`` (local) and ``global_explanation``."""

from qpm.inference.model import QPMModel, load
from qpm.inference.results import (
    FeatureEvidence,
    GlobalExplanation,
    LocalExplanation,
    MarginTerm,
    Predictions,
)

__all__ = [
    "FeatureEvidence",
    "GlobalExplanation",
    "LocalExplanation",
    "MarginTerm",
    "Predictions",
    "QPMModel",
    "load",
]
