"""Conformal prediction sets and CHiQPM's hierarchical explanation, over numpy arrays.

    paths.py       each class's features in the order an image activates them; delta
    outputs.py     a model's outputs on N images, with the paths and probabilities derived once
    tree.py        the prefix tree of class paths for one image (the hierarchical explanation)
    scores.py      THR, APS and the hierarchical non-conformity score
    quantile.py    the exact split-conformal quantile and its finite-sample bound
    methods.py     the registry of methods: calibrate a threshold, make prediction sets
    splits.py      calibration / evaluation splits of the test set (stratified, reference)
    evaluation.py  coverage, set size, SetCoherence per method and target coverage

No torch and no files: the run folder keeps a calibration (``qpm.run_folder.calibration``),
``qpm.inference`` applies it to images, ``qpm calibrate`` and ``qpm evaluate`` drive it.
"""

from qpm.conformal.evaluation import TARGETS, Report, SetMetrics, evaluate, format_report
from qpm.conformal.methods import (
    Threshold,
    get_method,
    method_names,
    methods_for,
    register_method,
    threshold_from_dict,
)
from qpm.conformal.outputs import Outputs
from qpm.conformal.quantile import Bound, conformal_quantile
from qpm.conformal.splits import SPLIT_RULES, Split, make_split
from qpm.conformal.tree import Hierarchy, Node, build_hierarchy

__all__ = [
    "SPLIT_RULES", "TARGETS", "Bound", "Hierarchy", "Node", "Outputs", "Report", "SetMetrics",
    "Split", "Threshold", "build_hierarchy", "conformal_quantile", "evaluate", "format_report",
    "get_method", "make_split", "method_names", "methods_for", "register_method",
    "threshold_from_dict",
]
