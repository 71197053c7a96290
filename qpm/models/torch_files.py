"""The one way qpm reads and writes torch files: ``torch.load(..., weights_only=True)`` on the
CPU (never arbitrary pickles) and atomic ``torch.save`` through :func:`qpm.io.atomic_write`.
A file whose tensors hold NaN or infinity is refused as it is read: such a model predicts
``nan`` for everything, and its numbers would crash later steps far from the cause."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from qpm.io import ArtifactError, atomic_write, check_input_file


def save_torch(path: str | Path, obj: dict) -> Path:
    """torch.save atomically; ``obj`` must hold only tensors and plain Python values."""
    return atomic_write(path, lambda fh: torch.save(obj, fh))


def load_torch(path: str | Path, problem: str | None = None, fix: str | None = None) -> Any:
    """What a torch file holds (tensors and plain values only); an unreadable file is one
    ArtifactError: ``problem`` (default: "PATH is corrupt or unreadable") with torch's first
    line in brackets, and ``fix`` (default: delete it and re-run)."""
    path = Path(path)
    fix = fix or f"Delete {path} and re-run; it will be recomputed."
    check_input_file(path, "Torch file", fix)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncation shows up as many exception types
        text = str(exc).strip() or type(exc).__name__
        first = text.splitlines()[0].split(". ")[0]  # torch's messages run to many lines
        raise ArtifactError(f"{problem or f'{path} is corrupt or unreadable'} "
                            f"({type(exc).__name__}: {first}).", fix) from None
    where = _first_nonfinite(obj)
    if where is not None:
        raise ArtifactError(f"{path} holds NaN or infinite values (in {where}), so it is "
                            "no usable model or checkpoint.", fix)
    return obj


def _first_nonfinite(obj: Any, where: str = "") -> str | None:
    """Where the first tensor with a NaN or infinite value sits in a loaded file, or None."""
    if isinstance(obj, torch.Tensor):
        if (obj.is_floating_point() or obj.is_complex()) and not bool(torch.isfinite(obj).all()):
            return repr(where) if where else "the tensor"
        return None
    items = obj.items() if isinstance(obj, dict) else (
        enumerate(obj) if isinstance(obj, list | tuple) else ())
    for key, value in items:
        found = _first_nonfinite(value, f"{where}.{key}" if where else str(key))
        if found is not None:
            return found
    return None


def load_checkpoint(path: str | Path) -> dict:
    """A run-folder checkpoint dictionary (a model file or an epoch checkpoint)."""
    obj = load_torch(path)
    if not isinstance(obj, dict):
        raise ArtifactError(f"{path} does not hold a checkpoint dictionary.",
                            f"Delete {path} and re-run; it will be recomputed.")
    return obj
