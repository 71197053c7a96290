"""Run-folder files: atomic writes and loads that never trust a half-written or foreign file.

Every writer goes through a temporary file in the same folder and ``os.replace``, so a kill
leaves either the old file or the new one. Every reader raises :class:`ArtifactError` for a
file it cannot use; the stage runner turns that into "recompute" (or a clear error).
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from qpm.errors import QPMError


class ArtifactError(QPMError):
    """A run-folder file exists but cannot be used (truncated, corrupt, wrong content)."""


def atomic_write(path: str | Path, write: Callable[[Any], None], mode: str = "wb") -> Path:
    """Write ``path`` through a synced temporary file in the same folder and os.replace."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | Path, obj: Any) -> Path:
    text = json.dumps(obj, indent=2, sort_keys=False) + "\n"
    return atomic_write(path, lambda fh: fh.write(text), mode="w")


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path} is corrupt or unreadable ({exc}).",
                            f"Delete {path} and re-run; it will be recomputed.") from None


def save_torch(path: str | Path, obj: dict) -> Path:
    """torch.save atomically; ``obj`` must hold only tensors and plain Python values."""
    return atomic_write(path, lambda fh: torch.save(obj, fh))


def load_torch(path: str | Path) -> dict:
    """torch.load with weights_only=True; a bad file is an ArtifactError."""
    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncation shows up as many exception types
        raise ArtifactError(f"{path} is corrupt or unreadable ({type(exc).__name__}: {exc}).",
                            f"Delete {path} and re-run; it will be recomputed.") from None
    if not isinstance(obj, dict):
        raise ArtifactError(f"{path} does not hold a checkpoint dictionary.",
                            f"Delete {path} and re-run; it will be recomputed.")
    return obj


def save_npz(path: str | Path, **arrays: np.ndarray) -> Path:
    return atomic_write(path, lambda fh: np.savez(fh, **arrays))


def load_npz(path: str | Path, required: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """All arrays of an .npz (allow_pickle=False), checking the ``required`` keys exist."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise ArtifactError(f"{path} is corrupt or unreadable ({type(exc).__name__}: {exc}).",
                            f"Delete {path} and re-run; it will be recomputed.") from None
    missing = [k for k in required if k not in arrays]
    if missing:
        raise ArtifactError(f"{path} lacks the array(s) {', '.join(missing)}.",
                            f"Delete {path} and re-run; it will be recomputed.")
    return arrays
