"""Saving and loading whole models (backbone + head) as plain tensors and Python values.

A model file is a dict that ``torch.load(..., weights_only=True)`` reads: the architecture
arguments, the head type, the state dict and a JSON-like ``meta``. Heads are looked up in a
registry so other final layers (Q-SENN, SLDD) load through the same function.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from qpm.models.backbones import Backbone, Classifier, create_backbone
from qpm.models.qpm_layer import QPMLayer

FORMAT_VERSION = 1

# head name -> (class, factory building an empty head of the right shape from its state)
_HEADS: dict[str, tuple[type, Callable[[dict[str, torch.Tensor]], nn.Module]]] = {}


def register_head(name: str, cls: type, from_state: Callable[[dict[str, torch.Tensor]], nn.Module]
                  ) -> None:
    """``from_state(head_state)`` returns a module whose load_state_dict accepts that state."""
    _HEADS[name] = (cls, from_state)


def _linear_from_state(state: dict[str, torch.Tensor]) -> nn.Module:
    c, f = state["linear.weight"].shape
    return Classifier(f, c)


register_head("linear", Classifier, _linear_from_state)
register_head("qpm", QPMLayer, QPMLayer.from_state_dict)


def head_name(head: nn.Module) -> str:
    # Most specific registered class wins (subclasses register their own names).
    for name, (cls, _) in reversed(list(_HEADS.items())):
        if type(head) is cls:
            return name
    raise ValueError(f"head type {type(head).__name__} is not registered; use register_head")


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
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "meta": dict(meta or {}),
    }


def build_model(ckpt: dict[str, Any]) -> Backbone:
    """A model from a :func:`model_state` dict (raises KeyError/ValueError on a foreign dict)."""
    if ckpt.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"unknown model format_version {ckpt.get('format_version')!r}")
    model = create_backbone(ckpt["arch"], "none", ckpt["reduced_strides"], ckpt["in_channels"],
                            ckpt["num_classes"])
    state = ckpt["state_dict"]
    name = ckpt["head"]
    if name not in _HEADS:
        raise ValueError(f"unknown head type {name!r} (not registered)")
    head_state = {k.removeprefix("classifier."): v for k, v in state.items()
                  if k.startswith("classifier.")}
    model.classifier = _HEADS[name][1](head_state)
    model.load_state_dict(state, strict=True)
    return model


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[Backbone, dict]:
    """Load a model file written by the pipeline; returns (model in eval mode, meta)."""
    from qpm.pipeline.artifacts import ArtifactError, load_torch

    ckpt = load_torch(path)
    try:
        model = build_model(ckpt)
    except (KeyError, ValueError, RuntimeError, TypeError) as exc:
        raise ArtifactError(f"{path} is not a usable qpm model file ({exc}).",
                            f"Delete {path} and re-run its stage.") from None
    return model.to(device).eval(), dict(ckpt.get("meta", {}))
