"""The final layers ("heads") a model file can hold, registered where each is defined.

``@register_head("qpm")`` on a head class records it under that name; the class rebuilds an
empty head of the right shape with ``from_state_dict(state)``. :mod:`qpm.models.checkpoint`
imports every head module, so a model file always finds its head class.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

_HEADS: dict[str, type[nn.Module]] = {}


def register_head(name: str) -> Callable[[type], type]:
    """Decorate a head class (with a ``from_state_dict(state)`` classmethod)."""

    def register(cls: type) -> type:
        _HEADS[name] = cls
        return cls

    return register


def head_name(head: nn.Module) -> str:
    """The registered name of ``head``'s exact class (a subclass registers its own name)."""
    for name, cls in _HEADS.items():
        if type(head) is cls:
            return name
    raise ValueError(f"head type {type(head).__name__} is not registered; use register_head")


def head_from_state(name: str, state: dict[str, torch.Tensor]) -> nn.Module:
    """An empty head ``name`` whose load_state_dict accepts ``state``."""
    if name not in _HEADS:
        raise ValueError(f"unknown head type {name!r} (not registered)")
    return _HEADS[name].from_state_dict(state)
