"""The QPM layer: n selected features, each class wired to its features by fixed binary weights.

logits = ((dropout(f[:, selected]) - mean) / std) @ W^T with W the (C, n) 0/1 matrix from the
assignment, as in the QPM reference: dropout acts on the selected raw features before they are
normalised, and mean and std are the selected features' statistics on the training set, fixed
(buffers) during fine-tuning, where only the backbone learns. So the global explanation
"class c uses features S_c" holds for the trained model exactly.

The SLDD and Q-SENN heads (``learn_normalisation=True``) learn the normalisation as their
papers do: a mean offset and a bounded scale on top of the fixed data statistics. The CHiQPM
head (:class:`ChiQPMLayer`) is the QPM layer with a ReLU on the normalised features, as the
reference's ``set_model_sldd(..., relu=True)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from qpm.errors import QPMError
from qpm.models.heads import register_head

# Bounds of the learned scale, relative to the data's std. A positive, bounded scale keeps the
# division well defined: a raw std parameter could be stepped below zero by one large gradient
# (e.g. when train-mode BatchNorm features are far larger than the eval-mode statistics of a
# barely trained backbone), then a clamp froze it at a tiny value and the logits blew up.
# The bounds are smooth (a sigmoid in log space), so no value is a gradient-free trap.
LOG_SCALE_MIN = math.log(0.05)
LOG_SCALE_MAX = math.log(1e3)
_SPAN = LOG_SCALE_MAX - LOG_SCALE_MIN
_OFFSET = math.log(-LOG_SCALE_MIN / LOG_SCALE_MAX)  # raw 0 -> scale 1
# Learned heads: a selected feature's spread is floored at this fraction of the median spread.
STD_FLOOR = 0.05
# Every std is clamped at this before dividing (the reference's clamp).
MIN_STD = 1e-6


@register_head("qpm")
class QPMLayer(nn.Module):
    """Sparse final layer; ``binary=False`` allows real-valued fixed weights (SLDD-style)."""

    relu = False  # a ReLU on the normalised features (CHiQPM's head)

    def __init__(
        self,
        selected: Sequence[int] | torch.Tensor,
        weight: torch.Tensor | np.ndarray,
        mean: torch.Tensor | np.ndarray | None = None,
        std: torch.Tensor | np.ndarray | None = None,
        dropout: float = 0.1,
        binary: bool = True,
        learn_normalisation: bool = False,
    ) -> None:
        super().__init__()
        selected = torch.as_tensor(np.asarray(selected), dtype=torch.long).flatten()
        weight = torch.as_tensor(np.asarray(weight), dtype=torch.float32)
        n = int(selected.numel())
        if weight.dim() != 2 or weight.shape[1] != n:
            raise ValueError(f"weight must be (C, {n}), got {tuple(weight.shape)}")
        if len(set(selected.tolist())) != n:
            raise ValueError("selected feature indices must be distinct")
        if binary and not torch.all((weight == 0) | (weight == 1)):
            raise ValueError("a QPM layer needs a 0/1 weight matrix")
        mean = torch.zeros(n) if mean is None else torch.as_tensor(np.asarray(mean)).float()
        std = torch.ones(n) if std is None else torch.as_tensor(np.asarray(std)).float()
        self.register_buffer("selected", selected)
        self.register_buffer("weight", weight)  # a buffer: saved, never trained
        self.learn_normalisation = bool(learn_normalisation)
        if self.learn_normalisation:
            # The data statistics are fixed buffers; the learned mean/std act on the
            # standardised features (start 0 and 1). Same function as learning the raw
            # mean/std, but a feature with a tiny spread no longer gets huge gradients on its
            # std. The scale is learned in log space through a sigmoid (see `scale`): always
            # positive and bounded, multiplicative steps, and weight decay pulls it to 1.
            self.register_buffer("data_mean", mean.clone())
            self.register_buffer("data_std", std.clone().clamp(min=MIN_STD))
            self.mean = nn.Parameter(torch.zeros(n))
            self.log_scale = nn.Parameter(torch.zeros(n))
        else:
            # QPM: the training statistics, frozen (the reference's retrain_normalisation=False).
            self.register_buffer("mean", mean.clone())
            self.register_buffer("std", std.clone())
        self.dropout = nn.Dropout(dropout)
        self.binary = binary

    @classmethod
    def from_assignment(
        cls,
        matrix: np.ndarray,
        selected: Sequence[int],
        train_features: np.ndarray | None = None,
        dropout: float = 0.1,
        learn_normalisation: bool = False,
    ) -> QPMLayer:
        """Build from an (F, C) 0/1 assignment; mean/std are the selected features' statistics
        on ``train_features`` (population std, as the reference computes them)."""
        matrix = np.asarray(matrix)
        selected = np.asarray(sorted(int(i) for i in selected), dtype=np.int64)
        if matrix.ndim != 2 or selected.size == 0:
            raise QPMError("The assignment is empty.", "Re-run the assignment stage.")
        if np.any(matrix[np.setdiff1d(np.arange(matrix.shape[0]), selected)] != 0):
            raise QPMError("The assignment uses features outside its selection.",
                           "Delete assignment.json and re-run so it is solved again.")
        weight = matrix[selected].T.astype(np.float32)  # (C, n)
        mean = std = None
        if train_features is not None:
            x = np.asarray(train_features, dtype=np.float64)[:, selected]
            mean = x.mean(axis=0)
            std = x.std(axis=0)
            if learn_normalisation:
                # A nearly constant feature would blow its z-score up; floor its spread.
                std = np.maximum(std, STD_FLOOR * float(np.median(std)) + 1e-6)
        return cls(selected, weight, mean, std, dropout=dropout,
                   learn_normalisation=learn_normalisation)

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor], prefix: str = "") -> QPMLayer:
        """An empty layer of the right shape and kind for ``state`` (then call load_state_dict)."""
        weight = state[prefix + "weight"]
        binary = bool(torch.all((weight == 0) | (weight == 1)))
        learned = prefix + "data_std" in state  # learned heads keep the data statistics apart
        return cls(state[prefix + "selected"], weight, binary=binary, learn_normalisation=learned)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # Learned heads written before the log-scale parametrisation hold the scale as "std".
        old = state_dict.get(prefix + "std")
        if (self.learn_normalisation and old is not None
                and prefix + "log_scale" not in state_dict):
            state_dict.pop(prefix + "std")
            p = ((old.clamp(min=1e-30).log() - LOG_SCALE_MIN) / _SPAN).clamp(1e-6, 1 - 1e-6)
            state_dict[prefix + "log_scale"] = torch.logit(p) - _OFFSET
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def scale(self) -> torch.Tensor:
        """The learned scale (> 0) of the standardised features (1 for a QPM head)."""
        if not self.learn_normalisation:
            return torch.ones_like(self.std)
        return (LOG_SCALE_MIN + _SPAN * torch.sigmoid(self.log_scale + _OFFSET)).exp()

    @property
    def n_features(self) -> int:
        return int(self.selected.numel())

    @property
    def num_classes(self) -> int:
        return int(self.weight.shape[0])

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        # Dropout on the raw selected features, then the normalisation (the reference's order).
        return self._inputs(self.dropout(features.index_select(1, self.selected))) \
            @ self.weight.t()

    def _inputs(self, x: torch.Tensor) -> torch.Tensor:
        """The normalised (and for CHiQPM ReLU'd) selected features ``x``."""
        mean, std = self._effective()
        z = (x - mean) / std
        return torch.relu(z) if self.relu else z

    def _effective(self) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.learn_normalisation:
            return self.mean, self.std.clamp(min=MIN_STD)
        return (self.data_mean + self.data_std * self.mean, self.data_std * self.scale)

    def layer_input(self, features: torch.Tensor) -> torch.Tensor:
        """What the weights multiply, from (N, F) pooled backbone features, without dropout:
        logits = layer_input @ weight.T (+ a bias). The one place readers (explanations,
        metrics, conformal scores) get it from; CHiQPM's head applies its ReLU here too."""
        return self._inputs(features.index_select(1, self.selected))

    def normalisation(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The effective (mean, std) the raw selected features are normalised with."""
        with torch.no_grad():
            mean, std = self._effective()
            return mean.clone(), std.clone()

    def class_feature_weights(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.weight, self.selected

    def assignment(self) -> dict[int, list[int]]:
        """Class index -> sorted backbone feature indices it uses."""
        sel = self.selected.tolist()
        w = self.weight.detach().cpu()
        return {c: sorted(sel[i] for i in torch.nonzero(w[c]).flatten().tolist())
                for c in range(w.shape[0])}


@register_head("chiqpm")
class ChiQPMLayer(QPMLayer):
    """The CHiQPM head: the QPM layer with a ReLU on its normalised features.

    In training mode ``forward`` keeps the values it multiplied by the weights (after dropout
    and ReLU) as ``last_values``: the Feature Grounding Loss is computed on exactly those, as
    the reference computes it on the features its final layer returns.
    """

    relu = True
    last_values: torch.Tensor | None = None

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        z = self._inputs(self.dropout(features.index_select(1, self.selected)))
        self.last_values = z if self.training else None
        return z @ self.weight.t()
