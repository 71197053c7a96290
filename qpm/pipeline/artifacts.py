"""Run-folder files that need torch (model checkpoints); everything else is in :mod:`qpm.io`.

Writers go through :func:`qpm.io.atomic_write`, so a kill leaves either the old file or the new
one. Readers raise :class:`ArtifactError` for a file they cannot use; the stage runner turns
that into "recompute" (or a clear error).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from qpm.io import (
    ArtifactError,
    atomic_write,
    npz_headers,
    read_json,
    read_npz,
    save_npz,
    write_json,
)

__all__ = ["ArtifactError", "atomic_write", "load_npz", "load_torch", "read_json", "save_npz",
           "save_torch", "write_json"]


def save_torch(path: str | Path, obj: dict) -> Path:
    """torch.save atomically; ``obj`` must hold only tensors and plain Python values."""
    return atomic_write(path, lambda fh: torch.save(obj, fh))


def load_torch(path: str | Path) -> dict:
    """torch.load with weights_only=True; a bad file is an ArtifactError."""
    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncation shows up as many exception types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ArtifactError(f"{path} is corrupt or unreadable ({type(exc).__name__}: {first}).",
                            f"Delete {path} and re-run; it will be recomputed.") from None
    if not isinstance(obj, dict):
        raise ArtifactError(f"{path} does not hold a checkpoint dictionary.",
                            f"Delete {path} and re-run; it will be recomputed.")
    return obj


def load_npz(path: str | Path, required: tuple[str, ...] = (), optional: tuple[str, ...] = ()
             ) -> dict[str, np.ndarray]:
    """The ``required`` and ``optional`` arrays of a run-folder .npz (every array when both
    are empty), read through :func:`qpm.io.read_npz`'s header and memory checks."""
    path = Path(path)
    keys = tuple(required) + tuple(optional)
    if not keys:
        keys = tuple(npz_headers(path, "Run-folder", f"Delete {path} and re-run."))
    return read_npz(path, keys, what="Run-folder", required=tuple(required),
                    fix=f"Delete {path} and re-run; it will be recomputed.")
