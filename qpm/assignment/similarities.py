"""The paper's similarity preprocessing: features and labels in, A and R out.

``A`` is the Pearson correlation of each feature with each class's one-hot indicator,
divided by ``max|A|``. ``R`` is the cosine similarity between the rows of A (the class
profile of each feature), upper triangle only with a zero diagonal, divided by ``max|R|``
over that triangle, with negative values set to 0. Everything is matrix products over all
classes at once, so CUB size (N=6000, F=2048, C=200) takes about a second.
"""

from __future__ import annotations

import numpy as np

from qpm.errors import QPMError


def _validate(
    features: np.ndarray, labels: np.ndarray, n_classes: int | None
) -> tuple[np.ndarray, np.ndarray, int]:
    X = np.asarray(features)
    y = np.asarray(labels)
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise QPMError(
            f"features must be a non-empty 2-D array (samples x features), got shape {X.shape}.",
            "Pass one row of feature values per training image.",
        )
    if not (np.issubdtype(X.dtype, np.number) or X.dtype == bool):
        raise QPMError(f"features must be numeric, got dtype {X.dtype}.", "Pass a float array.")
    X = X.astype(np.float64, copy=False)
    if not np.all(np.isfinite(X)):
        bad = int(X.size - np.count_nonzero(np.isfinite(X)))
        raise QPMError(
            f"features contain {bad} NaN or infinite value(s).",
            "Recompute the features; a diverged backbone produces NaN.",
        )
    if y.ndim != 1 or y.shape[0] != X.shape[0]:
        raise QPMError(
            f"labels must be 1-D with one entry per sample: features have {X.shape[0]} rows, "
            f"labels have shape {y.shape}.",
            "Pass the class index of every training image, in the same order as the features.",
        )
    if np.issubdtype(y.dtype, np.floating):
        if not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
            raise QPMError(
                "labels must be integer class indices, got non-integer values.",
                "Pass labels as integers 0..C-1.",
            )
        y = y.astype(np.int64)
    elif not np.issubdtype(y.dtype, np.integer):
        raise QPMError(
            f"labels must be integer class indices, got dtype {y.dtype}.",
            "Pass labels as integers 0..C-1.",
        )
    y = y.astype(np.int64, copy=False)
    if y.min() < 0:
        raise QPMError(f"labels contain a negative class index ({y.min()}).", "Use 0..C-1.")
    C = int(y.max()) + 1 if n_classes is None else int(n_classes)
    if C < 1 or y.max() >= C:
        raise QPMError(
            f"labels go up to {int(y.max())} but there are only {C} classes.",
            "Pass the right number of classes or fix the labels.",
        )
    counts = np.bincount(y, minlength=C)
    if np.any(counts == 0):
        missing = np.flatnonzero(counts == 0)
        shown = ", ".join(str(c) for c in missing[:5]) + (" ..." if missing.size > 5 else "")
        raise QPMError(
            f"{missing.size} class(es) have no sample: {shown}.",
            "Every class needs at least one training image; check the labels and class count.",
        )
    return X, y, C


def feature_class_correlation(
    features: np.ndarray, labels: np.ndarray, n_classes: int
) -> np.ndarray:
    """Pearson correlation (F, C) of every feature with every class indicator.

    A constant feature (or a class indicator without variance, i.e. C=1) has correlation 0.
    """
    X = features
    N = X.shape[0]
    onehot = np.zeros((N, n_classes), dtype=np.float64)
    onehot[np.arange(N), labels] = 1.0
    Xc = X - X.mean(axis=0)
    # Xc's columns sum to zero, so Xc^T (Y - mean Y) = Xc^T Y.
    cov = (Xc.T @ onehot) / N
    std_x = np.sqrt(np.einsum("ij,ij->j", Xc, Xc) / N)  # no (N, F) temporary
    p = onehot.mean(axis=0)
    std_y = np.sqrt(p * (1.0 - p))
    denom = np.outer(std_x, std_y)
    # Relative cutoff: a feature whose spread is rounding noise counts as constant.
    tiny = 1e-12 * max(float(np.abs(X).max()), 1.0)
    ok = np.outer(std_x > tiny, std_y > 0)
    corr = np.zeros_like(cov)
    np.divide(cov, denom, out=corr, where=ok)
    return np.clip(corr, -1.0, 1.0)


def row_cosine_similarity(A: np.ndarray) -> np.ndarray:
    """R from A: strict upper triangle of row cosines, / max|R|, negatives set to 0."""
    norms = np.linalg.norm(A, axis=1)
    unit = np.zeros_like(A)
    np.divide(A, norms[:, None], out=unit, where=norms[:, None] > 0)
    R = np.triu(unit @ unit.T, k=1)
    top = float(np.abs(R).max()) if R.size else 0.0
    if top > 0:
        R /= top
    R[R < 0] = 0.0
    return R


def compute_similarities(
    features: np.ndarray, labels: np.ndarray, n_classes: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The paper's ``A`` (F, C) and ``R`` (F, F) from training features (N, F) and labels (N,)."""
    X, y, C = _validate(features, labels, n_classes)
    A = feature_class_correlation(X, y, C)
    top = float(np.abs(A).max())
    if top > 0:
        A = A / top
    return A, row_cosine_similarity(A)
