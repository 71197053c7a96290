"""The cached-similarity file (SIMS.npz) and the features file (FEATURES.npz).

SIMS.npz holds ``A`` (F, C), optionally ``R`` (F, F), ``b`` (F,), ``class_names`` and
``feature_names`` (unicode arrays, never object arrays), optionally the settings of the run
that wrote it (:data:`SETTINGS`: ``n_features``, ``per_class``, ``preset``, ``tau_rule`` and,
for a preset with forced pairs, ``rho``, as 0-d arrays, so ``qpm solve``/``qpm compare``
solve that run's problem) and ``format_version`` = 1.
FEATURES.npz holds ``features`` (N, F), ``labels`` (N,) and optionally ``b`` (F,) and
``class_names`` (C,).
Both are read through :func:`qpm.io.read_npz` (declared shapes, dtypes and memory checked
before anything is allocated; never pickle); every way a file can be unusable is a QPMError.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from qpm.errors import QPMError
from qpm.io import Header, read_npz, save_npz

if TYPE_CHECKING:  # imported when used: `qpm similarities` never builds a problem
    from qpm.assignment.problem import AssignmentProblem

FORMAT_VERSION = 1
# The run settings a SIMS.npz may record, with their types.
SETTINGS: dict[str, type] = {"n_features": int, "per_class": int, "preset": str, "tau_rule": str,
                             "rho": float}


@dataclass
class SimilarityFile:
    """The arrays of a SIMS.npz file."""

    A: np.ndarray
    R: np.ndarray | None = None
    b: np.ndarray | None = None
    class_names: tuple[str, ...] | None = None
    feature_names: tuple[str, ...] | None = None
    settings: dict[str, int | str] = field(default_factory=dict)  # the writer's, if recorded

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
        from qpm.assignment.problem import AssignmentProblem

        return AssignmentProblem(**fields)


def _names(values, what: str) -> np.ndarray | None:
    if values is None:
        return None
    arr = np.asarray([str(v) for v in values], dtype=np.str_)
    if arr.ndim != 1:
        raise QPMError(f"{what} must be a flat list of names.", "Pass one name per entry.")
    return arr


def save_similarities(
    path: str | Path,
    A: np.ndarray,
    R: np.ndarray | None = None,
    b: np.ndarray | None = None,
    class_names=None,
    feature_names=None,
    settings: dict | None = None,
) -> Path:
    """Write SIMS.npz (atomically). Names are stored as unicode arrays; ``settings`` (keys of
    :data:`SETTINGS`) records the n, k, preset and tau rule of the run that made it."""
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
    for key, value in (settings or {}).items():
        if key not in SETTINGS:
            raise QPMError(f"Unknown similarity-file setting {key!r}.",
                           f"Record only: {', '.join(SETTINGS)}.")
        if value is not None:
            arrays[key] = np.array(SETTINGS[key](value))
    save_npz(path, **arrays)
    return Path(path)


def load_similarities(path: str | Path) -> SimilarityFile:
    """Read SIMS.npz written by :func:`save_similarities` (or by hand, same keys)."""
    fix = "Recreate it with `qpm similarities FEATURES.npz -o SIMS.npz`."
    data = read_npz(path, SIMS_KEYS, what="Similarity", fix=fix,
                    check=lambda h: _check_sims_shapes(h, path, fix), factor=2.0)
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
            names[key] = tuple(x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x)
                               for x in arr.tolist())
    for key in ("A", "R", "b"):
        arr = data.get(key)
        if arr is not None and not np.issubdtype(arr.dtype, np.number):
            raise QPMError(f"'{key}' in {path} is not numeric (dtype {arr.dtype}).", fix)
    settings: dict[str, int | str] = {}
    for key, kind in SETTINGS.items():
        arr = data.get(key)
        if arr is None:
            continue
        numeric = np.issubdtype(arr.dtype, np.floating if kind is float else np.integer)
        ok = arr.shape == () and (arr.dtype.kind in "US" if kind is str else numeric)
        if not ok:
            raise QPMError(f"'{key}' in {path} must be a single {kind.__name__}.", fix)
        settings[key] = kind(arr.item())
    return SimilarityFile(
        A=data["A"].astype(np.float64),
        R=None if "R" not in data else data["R"].astype(np.float64),
        b=None if "b" not in data else data["b"].astype(np.float64),
        class_names=names.get("class_names"),
        feature_names=names.get("feature_names"),
        settings=settings,
    )


@dataclass
class FeatureFile:
    """The arrays of a FEATURES.npz file."""

    features: np.ndarray
    labels: np.ndarray
    b: np.ndarray | None = None
    class_names: tuple[str, ...] | None = None


def load_features(path: str | Path) -> FeatureFile:
    """Read FEATURES.npz: ``features`` (N, F), ``labels`` (N,), optional ``b`` (F,) and
    ``class_names`` (C,)."""
    fix = "Check the path; save features with numpy.savez(path, features=X, labels=y)."
    data = read_npz(path, ("features", "labels", "b", "class_names"), what="Features", fix=fix,
                    required=("features", "labels"),
                    check=lambda h: _check_feature_shapes(h, path, fix), factor=2.0)
    labels = _checked_labels(data["labels"], path, fix)
    b = data.get("b")
    names = data.get("class_names")
    if names is not None and (names.ndim != 1 or names.dtype.kind not in "US"):
        raise QPMError(f"class_names in {path} must be a 1-D string array.", fix)
    return FeatureFile(data["features"], labels, None if b is None else b.astype(float),
                       None if names is None else tuple(str(x) for x in names.tolist()))


SIMS_KEYS = ("A", "R", "b", "class_names", "feature_names", "format_version", *SETTINGS)
NUMERIC = "biuf"


def _check_sims_shapes(h: dict[str, Header], path, fix: str) -> None:
    """Refuse declared shapes that do not fit together, before anything is allocated."""
    if "A" not in h:
        return  # reported with the other content checks
    if len(h["A"].shape) != 2:
        raise QPMError(f"'A' in {path} must be 2-D (features x classes), got shape "
                       f"{h['A'].shape}.", fix)
    F, C = h["A"].shape
    expected = {"R": (F, F), "b": (F,), "class_names": (C,), "feature_names": (F,)}
    for key, shape in expected.items():
        if key in h and h[key].shape != shape:
            raise QPMError(f"{key} has shape {h[key].shape} in {path}, but A is {F} x {C}, "
                           f"so it must be {shape}.", fix)
    for key in ("A", "R", "b"):
        if key in h and h[key].dtype.kind not in NUMERIC:
            raise QPMError(f"'{key}' in {path} is not numeric (dtype {h[key].dtype}).", fix)


def _check_feature_shapes(h: dict[str, Header], path, fix: str) -> None:
    from qpm.memory import require_memory

    X, y = h["features"], h["labels"]
    if len(X.shape) != 2 or X.dtype.kind not in NUMERIC:
        raise QPMError(f"'features' in {path} must be a 2-D numeric array (samples x features), "
                       f"got shape {X.shape} dtype {X.dtype}.", fix)
    N, F = X.shape
    if y.shape != (N,) or y.dtype.kind not in NUMERIC:
        raise QPMError(f"'labels' in {path} must be 1-D numeric with one entry per sample "
                       f"({N}), got shape {y.shape} dtype {y.dtype}.", fix)
    if "b" in h and (h["b"].shape != (F,) or h["b"].dtype.kind not in NUMERIC):
        raise QPMError(f"'b' in {path} must be a 1-D numeric array of {F} values, got shape "
                       f"{h['b'].shape}.", fix)
    # A (F x C) and R (F x F) in float64, each with a temporary of the same size.
    require_memory(2 * 8 * (F * F + N * F), f"Similarities of {F} features from {N} samples",
                   "Use fewer features (e.g. only the backbone's last layer) or more memory.")


def _checked_labels(y: np.ndarray, path, fix: str) -> np.ndarray:
    """Integer class indices 0..C-1 with C at most the number of samples, as int64."""
    if y.size == 0:
        return y.astype(np.int64)
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
            raise QPMError(f"'labels' in {path} holds non-integer values.",
                           "Store the class index of every sample as an integer 0..C-1.")
    lo, hi = y.min().item(), y.max().item()  # Python numbers: exact even for uint64
    if lo < 0:
        raise QPMError(f"'labels' in {path} holds a negative class index ({lo}).",
                       "Store class indices 0..C-1.")
    if hi >= y.size:
        raise QPMError(f"'labels' in {path} go up to {hi}, but there are only {y.size} samples, "
                       "so most classes would have none.", "Store class indices 0..C-1.")
    return y.astype(np.int64)
