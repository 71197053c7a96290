"""The stages of a run, in order: the shared ones (dense, features), then the model type's.

The model types are the modules imported below, each registering itself where it is defined
(``@register_model_type``): :mod:`.qpm` (QPM), :mod:`.chiqpm` (CHiQPM) and :mod:`.baselines`
(SLDD, Q-SENN). To add a
model type, write its stages in a module here and add it to this list.
"""

from __future__ import annotations

from qpm import run_folder as rf
from qpm.pipeline.stages import baselines, chiqpm, qpm  # noqa: F401  (the model types)
from qpm.pipeline.stages.base import (
    RunContext,
    Stage,
    check_reference_quirks,
    get_model_type,
    model_type_names,
    register_model_type,
)
from qpm.pipeline.stages.shared import shared_stages
from qpm.run_folder.config import TrainConfig

__all__ = ["RunContext", "Stage", "model_type_names", "pipeline_stages", "register_model_type",
           "variant_of"]


def pipeline_stages(cfg: TrainConfig) -> list[Stage]:
    """Every stage of a run of ``cfg.model_type``, in order (the runner places the
    ``per_variant`` ones in the variant's folder)."""
    check_reference_quirks(cfg)
    return shared_stages() + list(get_model_type(cfg.model_type).stages(cfg))


def variant_of(cfg: TrainConfig) -> str:
    """The name of the variant folder ``cfg``'s model-type stages write into."""
    return rf.variant_name(cfg.model_type, get_model_type(cfg.model_type).variant(cfg))
