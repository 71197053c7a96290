"""Explanations people can look at: explanation.json, figures, a feature gallery, index.html.

The parts here work on arrays (weights, example images, activation maps); the ``qpm explain``
command gathers those from a run folder, :mod:`qpm.inference` from a loaded model.
"""

from qpm.explain.examples import choose_examples, example_quality, top_activating
from qpm.explain.figures import displayable, plot_assignment, plot_class_comparison
from qpm.explain.html import write_index
from qpm.explain.structure import (
    ClassPair,
    FeatureCounts,
    class_features,
    closest_pairs,
    explanation_dict,
    similar_pairs,
)
from qpm.explain.writer import write_explanations
from qpm.text import plain_text, printable

__all__ = [
    "ClassPair",
    "FeatureCounts",
    "choose_examples",
    "class_features",
    "closest_pairs",
    "displayable",
    "example_quality",
    "explanation_dict",
    "plain_text",
    "plot_assignment",
    "plot_class_comparison",
    "printable",
    "similar_pairs",
    "top_activating",
    "write_explanations",
    "write_index",
]
