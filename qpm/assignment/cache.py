"""The cached-similarity file (SIMS.npz) and the features file (FEATURES.npz).

SIMS.npz holds ``A`` (F, C), optionally ``R`` (F, F), ``b`` (F,), ``class_names`` and
``feature_names`` (unicode arrays, never object arrays) and ``format_version`` = 1.
FEATURES.npz holds ``features`` (N, F), ``labels`` (N,) and optionally ``b`` (F,).
Both are read with ``allow_pickle=False``; every way a file can be unusable is a QPMError.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qpm.assignment.problem import AssignmentProblem
from qpm.errors import QPMError

FORMAT_VERSION = 1


@dataclass
class SimilarityFile:
    """The arrays of a SIMS.npz file."""

    A: np.ndarray
    R: np.ndarray | None = None
    b: np.ndarray | None = None
    class_names: tuple[str, ...] | None = None
    feature_names: tuple[str, ...] | None = None

    def problem(self, **kwargs) -> AssignmentProblem:
        """An :class:`AssignmentProblem` from these arrays; kwargs set n_features, preset, ..."""
        fields = {
            "A": self.A,
            "R": self.R,
            "b": self.b,
            "class_names": self.class_names,
            "feature_names": self.feature_names,
        }
        fields.update(kwargs)
        return AssignmentProblem(**fields)


def _names(values, what: str) -> np.ndarray | None:
    if values is None:
        return None
    arr = np.asarray([str(v) for v in values], dtype=np.str_)
    if arr.ndim != 1:
        raise QPMError(f"{what} must be a flat list of names.", "Pass one name per entry.")
    return arr


def atomic_savez(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    """Write an uncompressed .npz atomically: a temporary file in the same folder, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_similarities(
    path: str | Path,
    A: np.ndarray,
    R: np.ndarray | None = None,
    b: np.ndarray | None = None,
    class_names=None,
    feature_names=None,
) -> Path:
    """Write SIMS.npz (atomically). Names are stored as unicode arrays."""
    A = np.asarray(A, dtype=np.float64)
    if A.ndim != 2:
        raise QPMError(f"A must be 2-D (features x classes), got shape {A.shape}.",
                       "Pass the feature-class similarity matrix.")
    arrays: dict[str, np.ndarray] = {"A": A, "format_version": np.array(FORMAT_VERSION)}
    if R is not None:
        arrays["R"] = np.asarray(R, dtype=np.float64)
    if b is not None:
        arrays["b"] = np.asarray(b, dtype=np.float64)
    for key, values in (("class_names", class_names), ("feature_names", feature_names)):
        names = _names(values, key)
        if names is not None:
            arrays[key] = names
    atomic_savez(path, arrays)
    return Path(path)


def _open_npz(path: str | Path, what: str, fix: str) -> dict[str, np.ndarray]:
    """All arrays of an .npz file, or a QPMError saying why it cannot be read safely."""
    path = Path(path)
    if not path.exists():
        raise QPMError(f"{what} file {path} does not exist.", fix)
    if path.is_dir():
        raise QPMError(f"{what} path {path} is a folder, not an .npz file.", fix)
    try:
        with open(path, "rb") as fh:
            magic = fh.read(6)
    except OSError as exc:
        raise QPMError(f"{what} file {path} cannot be read ({exc.strerror}).", fix) from None
    if not magic.startswith(b"PK"):
        kind = "a single .npy array" if magic.startswith(b"\x93NUMPY") else "not a zip archive"
        raise QPMError(f"{what} file {path} is not an .npz file ({kind}).", fix)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "pickle" in str(exc).lower():
            raise QPMError(
                f"{what} file {path} contains object arrays that need pickle to load, "
                "which is refused for safety.",
                "Rewrite it with plain numeric arrays and names as unicode string arrays.",
            ) from None
        raise QPMError(f"{what} file {path} is not a valid .npz file ({exc}).", fix) from None
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise QPMError(
            f"{what} file {path} is corrupt or truncated ({type(exc).__name__}: {exc}).", fix
        ) from None
    for key, value in arrays.items():
        if not isinstance(value, np.ndarray):  # a zip member that is not a .npy array
            raise QPMError(f"{what} file {path} is corrupt: member {key!r} is not an array.", fix)
    return arrays


def load_similarities(path: str | Path) -> SimilarityFile:
    """Read SIMS.npz written by :func:`save_similarities` (or by hand, same keys)."""
    fix = "Recreate it with `qpm similarities FEATURES.npz -o SIMS.npz`."
    data = _open_npz(path, "Similarity", fix)
    version = data.get("format_version")
    if version is None or version.shape != () or not np.issubdtype(version.dtype, np.integer):
        raise QPMError(f"Similarity file {path} has no integer format_version.", fix)
    if int(version) != FORMAT_VERSION:
        raise QPMError(
            f"Similarity file {path} has format_version {int(version)}; this qpm reads "
            f"version {FORMAT_VERSION}.",
            fix,
        )
    if "A" not in data:
        raise QPMError(f"Similarity file {path} has no array 'A'.", fix)
    names = {}
    for key in ("class_names", "feature_names"):
        arr = data.get(key)
        if arr is not None:
            if arr.ndim != 1 or arr.dtype.kind not in "US":
                raise QPMError(f"{key} in {path} must be a 1-D string array.", fix)
            names[key] = tuple(str(x) for x in arr.tolist())
    for key in ("A", "R", "b"):
        arr = data.get(key)
        if arr is not None and not np.issubdtype(arr.dtype, np.number):
            raise QPMError(f"'{key}' in {path} is not numeric (dtype {arr.dtype}).", fix)
    return SimilarityFile(
        A=data["A"].astype(np.float64),
        R=None if "R" not in data else data["R"].astype(np.float64),
        b=None if "b" not in data else data["b"].astype(np.float64),
        class_names=names.get("class_names"),
        feature_names=names.get("feature_names"),
    )


@dataclass
class FeatureFile:
    """The arrays of a FEATURES.npz file."""

    features: np.ndarray
    labels: np.ndarray
    b: np.ndarray | None = None


def load_features(path: str | Path) -> FeatureFile:
    """Read FEATURES.npz: ``features`` (N, F), ``labels`` (N,), optional ``b`` (F,)."""
    fix = "Check the path; save features with numpy.savez(path, features=X, labels=y)."
    data = _open_npz(path, "Features", fix)
    for key in ("features", "labels"):
        if key not in data:
            raise QPMError(f"Features file {path} has no array '{key}'.", fix)
    b = data.get("b")
    if b is not None and (b.ndim != 1 or not np.issubdtype(b.dtype, np.number)):
        raise QPMError(f"'b' in {path} must be a 1-D numeric array.", fix)
    return FeatureFile(data["features"], data["labels"], None if b is None else b.astype(float))
