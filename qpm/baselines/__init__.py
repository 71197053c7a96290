"""The Q-SENN and SLDD baselines: glm-saga based sparse final layers (arrays in, arrays out).

Their torch head is :class:`qpm.models.sparse_head.SparseHead`; their pipeline stages are in
:mod:`qpm.pipeline.stages.baselines`.
"""

from qpm.baselines.glm import GLMConfig, require_glm_saga
from qpm.baselines.layer import SparseLayer, keep_largest
from qpm.baselines.qsenn import qsenn_layer, qsenn_schedule, quantise, run_qsenn
from qpm.baselines.selection import SelectionPath, select_features, selection_path
from qpm.baselines.sldd import sldd_sparsify

__all__ = [
    "GLMConfig",
    "SelectionPath",
    "SparseLayer",
    "keep_largest",
    "qsenn_layer",
    "qsenn_schedule",
    "quantise",
    "require_glm_saga",
    "run_qsenn",
    "select_features",
    "selection_path",
    "sldd_sparsify",
]
