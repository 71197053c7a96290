"""The sparse final layer both baselines produce, as plain arrays."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from qpm.io import ArtifactError, read_npz, save_npz

LAYER_KEYS = ("selection", "weight", "bias", "mean", "std", "info")


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

    def head(self, dropout: float = 0.1, reference_quirks: bool = False):
        """This layer as a torch head (:class:`qpm.models.sparse_head.SparseHead`);
        ``reference_quirks``: one that learns the raw mean and std, as the reference's."""
        from qpm.models.sparse_head import SparseHead

        return SparseHead(self.selection, self.weight, self.bias, self.mean, self.std, dropout,
                          reference_quirks=reference_quirks)

    def save(self, path: str | Path) -> Path:
        return save_npz(path, selection=self.selection.astype(np.int64), weight=self.weight,
                        bias=self.bias, mean=self.mean, std=self.std,
                        info=np.asarray(json.dumps({"sparsifier": self.sparsifier, **self.info})))

    @classmethod
    def load(cls, path: str | Path) -> SparseLayer:
        fix = f"Delete {path} and re-run; it will be recomputed."
        a = read_npz(path, LAYER_KEYS, what="Sparse-layer", fix=fix)
        try:
            info = json.loads(str(a["info"]))
        except ValueError:
            raise ArtifactError(f"{path} holds unreadable layer information.", fix) from None
        return cls(a["selection"], a["weight"], a["bias"], a["mean"], a["std"],
                   info.pop("sparsifier", "sldd"), info)


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
