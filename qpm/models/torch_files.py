"""The one way qpm reads and writes torch files: ``torch.load(..., weights_only=True)`` on the
CPU (never arbitrary pickles) and atomic ``torch.save`` through :func:`qpm.io.atomic_write`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from qpm.io import ArtifactError, atomic_write


def save_torch(path: str | Path, obj: dict) -> Path:
    """torch.save atomically; ``obj`` must hold only tensors and plain Python values."""
    return atomic_write(path, lambda fh: torch.save(obj, fh))


def load_torch(path: str | Path, problem: str | None = None, fix: str | None = None) -> Any:
    """What a torch file holds (tensors and plain values only); an unreadable file is one
    ArtifactError: ``problem`` (default: "PATH is corrupt or unreadable") with torch's first
    line in brackets, and ``fix`` (default: delete it and re-run)."""
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncation shows up as many exception types
        text = str(exc).strip() or type(exc).__name__
        first = text.splitlines()[0].split(". ")[0]  # torch's messages run to many lines
        raise ArtifactError(f"{problem or f'{path} is corrupt or unreadable'} "
                            f"({type(exc).__name__}: {first}).",
                            fix or f"Delete {path} and re-run; it will be recomputed.") from None


def load_checkpoint(path: str | Path) -> dict:
    """A run-folder checkpoint dictionary (a model file or an epoch checkpoint)."""
    obj = load_torch(path)
    if not isinstance(obj, dict):
        raise ArtifactError(f"{path} does not hold a checkpoint dictionary.",
                            f"Delete {path} and re-run; it will be recomputed.")
    return obj
