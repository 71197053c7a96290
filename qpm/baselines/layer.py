"""The sparse final layer both baselines produce, as plain arrays."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class SparseLayer:
    """A sparse linear layer on standardised, selected features.

    logits = weight @ ((features[selection] - mean) / std) + bias, with ``weight`` (C, n),
    ``selection`` (n,) indices into the backbone's F features, ``mean``/``std`` (n,).
    ``sparsifier`` names what produced it ("sldd" or "qsenn"); ``info`` holds diagnostics.
    """

    selection: np.ndarray
    weight: np.ndarray
    bias: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    sparsifier: str
    info: dict = field(default_factory=dict)

    @property
    def n_classes(self) -> int:
        return int(self.weight.shape[0])

    def logits(self, features: np.ndarray) -> np.ndarray:
        """Scores (N, C) for backbone features (N, F)."""
        x = (np.asarray(features)[:, self.selection] - self.mean) / self.std
        return x @ self.weight.T + self.bias


def keep_largest(weight: np.ndarray, n_keep: int) -> np.ndarray:
    """A copy of ``weight`` with all but its ``n_keep`` largest-magnitude entries set to 0.

    Ties are broken by position (row-major), so exactly min(n_keep, nonzeros) entries stay.
    """
    w = np.asarray(weight, dtype=np.float64)
    flat = w.ravel()
    nonzero = np.flatnonzero(flat)
    if nonzero.size <= n_keep:
        return w.copy()
    order = nonzero[np.argsort(-np.abs(flat[nonzero]), kind="stable")[:n_keep]]
    out = np.zeros_like(flat)
    out[order] = flat[order]
    return out.reshape(w.shape)
