"""The Q-SENN and SLDD baselines: glm-saga based sparse final layers (arrays in, arrays out)."""

from qpm.baselines.glm import GLMConfig, require_glm_saga
from qpm.baselines.layer import SparseLayer, keep_largest
from qpm.baselines.qsenn import qsenn_layer, quantise, run_qsenn
from qpm.baselines.sldd import sldd_sparsify

__all__ = [
    "GLMConfig",
    "SparseLayer",
    "keep_largest",
    "qsenn_layer",
    "quantise",
    "require_glm_saga",
    "run_qsenn",
    "sldd_sparsify",
]

# Registers the "sldd" and "qsenn" model types and the "sparse" head with the pipeline.
from qpm.baselines import stages as _stages  # noqa: E402,F401
