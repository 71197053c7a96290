"""The head of the SLDD and Q-SENN baselines: a QPM layer with real-valued fixed weights and a
bias."""

from __future__ import annotations

import numpy as np
import torch

from qpm.models.heads import register_head
from qpm.models.qpm_layer import QPMLayer


@register_head("sparse")
class SparseHead(QPMLayer):
    """logits = ((dropout(f[:, selected]) - mean) / std) @ W^T + b with W, b fixed buffers.

    As in the SLDD / Q-SENN reference, only ``mean`` and ``std`` (and the backbone) train
    during fine-tuning, so the sparse global explanation stays exact.
    """

    def __init__(self, selected, weight, bias=None, mean=None, std=None,
                 dropout: float = 0.1) -> None:
        super().__init__(selected, weight, mean, std, dropout=dropout, binary=False,
                         learn_normalisation=True)
        c = self.num_classes
        b = torch.zeros(c) if bias is None else torch.as_tensor(np.asarray(bias)).float()
        if b.shape != (c,):
            raise ValueError(f"bias must be ({c},), got {tuple(b.shape)}")
        self.register_buffer("bias", b.clone())

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor], prefix: str = "") -> SparseHead:
        return cls(state[prefix + "selected"], state[prefix + "weight"], state[prefix + "bias"])

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return super().forward(features) + self.bias
