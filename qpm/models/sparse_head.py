"""The head of the SLDD and Q-SENN baselines: a QPM layer with real-valued fixed weights and a
bias."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from qpm.models.heads import register_head
from qpm.models.qpm_layer import QPMLayer


@register_head("sparse")
class SparseHead(QPMLayer):
    """logits = ((dropout(f[:, selected]) - mean) / std) @ W^T + b with W, b fixed buffers.

    As in the SLDD / Q-SENN reference, only the normalisation (and the backbone) trains during
    fine-tuning, so the sparse global explanation stays exact. By default it learns an offset
    and a bounded log-scale on top of the data statistics (:class:`QPMLayer`);
    ``reference_quirks=True`` learns the raw ``mean`` and ``std`` as the reference's
    ``SLDDLevel`` does: plain parameters that weight decay pulls toward 0, the std clamped at
    1e-6 where it divides.
    """

    def __init__(self, selected, weight, bias=None, mean=None, std=None,
                 dropout: float = 0.1, reference_quirks: bool = False) -> None:
        super().__init__(selected, weight, mean, std, dropout=dropout, binary=False,
                         learn_normalisation=not reference_quirks)
        self.reference_quirks = bool(reference_quirks)
        if self.reference_quirks:  # the fixed-statistics buffers become the parameters
            self.mean = nn.Parameter(self.mean.clone())
            self.std = nn.Parameter(self.std.clone())
        c = self.num_classes
        b = torch.zeros(c) if bias is None else torch.as_tensor(np.asarray(bias)).float()
        if b.shape != (c,):
            raise ValueError(f"bias must be ({c},), got {tuple(b.shape)}")
        self.register_buffer("bias", b.clone())

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor], prefix: str = "") -> SparseHead:
        # Only the default head keeps the data statistics apart from what it learns.
        quirks = prefix + "data_std" not in state
        return cls(state[prefix + "selected"], state[prefix + "weight"], state[prefix + "bias"],
                   reference_quirks=quirks)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return super().forward(features) + self.bias
