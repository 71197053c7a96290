"""Global explanations people can look at: explanation.json, comparison figures, index.html.

The parts here work on arrays (weights, example images, activation maps); the ``qpm explain``
command gathers those from a run folder.
"""

from qpm.explain.figures import (
    choose_examples,
    displayable,
    plot_assignment,
    plot_class_comparison,
)
from qpm.explain.html import write_index
from qpm.explain.structure import (
    ClassPair,
    class_features,
    closest_pairs,
    explanation_dict,
    similar_pairs,
)
from qpm.explain.writer import write_explanations

__all__ = [
    "ClassPair",
    "choose_examples",
    "class_features",
    "closest_pairs",
    "displayable",
    "explanation_dict",
    "plot_assignment",
    "plot_class_comparison",
    "similar_pairs",
    "write_explanations",
    "write_index",
]
