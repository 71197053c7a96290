"""Saving and loading whole models (backbone + head) as plain tensors and Python values.

A model file is a dict that ``torch.load(..., weights_only=True)`` reads: the architecture
arguments, the head type, the state dict and a JSON-like ``meta``. Heads are looked up in
their registry (:mod:`qpm.models.heads`), so every final layer loads through this function.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from qpm.io import ArtifactError
from qpm.models import qpm_layer, sparse_head  # noqa: F401  (every head: they register on import)
from qpm.models.adapter import AdapterSpec, adapter_fields, create_model
from qpm.models.backbones import Backbone
from qpm.models.heads import head_from_state, head_name
from qpm.models.torch_files import load_checkpoint

FORMAT_VERSION = 1


def model_state(model: Backbone, in_channels: int, reduced_strides: bool,
                meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """The dict :func:`build_model` turns back into ``model``."""
    return {
        "format_version": FORMAT_VERSION,
        "arch": model.arch,
        "num_classes": model.num_classes,
        "in_channels": int(in_channels),
        "reduced_strides": bool(reduced_strides),
        "head": head_name(model.classifier),
        **adapter_fields(model),  # a frozen backbone and its adapter (else nothing)
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "meta": dict(meta or {}),
    }


def build_model(ckpt: dict[str, Any]) -> Backbone:
    """A model from a :func:`model_state` dict (raises KeyError/ValueError on a foreign dict)."""
    if ckpt.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"unknown model format_version {ckpt.get('format_version')!r}")
    model = create_model(ckpt["arch"], "none", ckpt["reduced_strides"], ckpt["in_channels"],
                         ckpt["num_classes"], adapter=AdapterSpec.from_dict(ckpt.get("adapter")),
                         frozen=bool(ckpt.get("frozen", False)))
    state = ckpt["state_dict"]
    head_state = {k.removeprefix("classifier."): v for k, v in state.items()
                  if k.startswith("classifier.")}
    model.classifier = head_from_state(ckpt["head"], head_state)
    model.load_state_dict(state, strict=True)
    return model


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[Backbone, dict]:
    """Load a model file written by the pipeline; returns (model in eval mode, meta)."""
    ckpt = load_checkpoint(path)
    fix = f"Delete {path} and re-run its stage."
    try:
        model = build_model(ckpt)
    except (KeyError, ValueError, RuntimeError, TypeError, AttributeError, IndexError) as exc:
        raise ArtifactError(f"{path} is not a usable qpm model file ({exc}).", fix) from None
    meta = ckpt.get("meta", {})
    names = meta.get("class_names") if isinstance(meta, dict) else None
    if not isinstance(meta, dict) or not (names is None or (
            isinstance(names, list) and all(isinstance(n, str) for n in names))):
        what = (f"its meta is a {type(meta).__name__}, not a dictionary"
                if not isinstance(meta, dict) else "its class_names are not a list of names")
        raise ArtifactError(f"{path} is not a usable qpm model file ({what}).", fix)
    return model.to(device).eval(), dict(meta)
