"""The paper's similarity preprocessing: features and labels in, A and R out.

``A`` is the Pearson correlation of each feature with each class's one-hot indicator,
divided by ``max|A|``. ``R`` is the cosine similarity between the rows of A (the class
profile of each feature), upper triangle only with a zero diagonal, divided by ``max|R|``
over that triangle, with negative values set to 0. Everything is vectorised over all
classes at once: A needs only per-class sums of the features (O(N*F), no dense product
with the one-hot labels), R one (F, C) @ (C, F) product.
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
    if np.iscomplexobj(X):
        raise QPMError("features are complex numbers.", "Pass real-valued features.")
    if not np.issubdtype(X.dtype, np.floating):
        X = X.astype(np.float64)  # integers and booleans; floats keep their dtype (no copy)
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
    if y.min() < 0:
        raise QPMError(f"labels contain a negative class index ({y.min()}).", "Use 0..C-1.")
    top = int(y.max())
    C = top + 1 if n_classes is None else int(n_classes)
    if C < 1 or top >= C:
        raise QPMError(
            f"labels go up to {top} but there are only {C} classes.",
            "Pass the right number of classes or fix the labels.",
        )
    y = y.astype(np.int64, copy=False)
    counts = np.bincount(y, minlength=C)
    if np.any(counts == 0):
        missing = np.flatnonzero(counts == 0)
        shown = ", ".join(str(c) for c in missing[:5]) + (" ..." if missing.size > 5 else "")
        raise QPMError(
            f"{missing.size} class(es) have no sample: {shown}.",
            "Every class needs at least one training image; check the labels and class count.",
        )
    return X, y, C


# Columns whose largest |value| lies outside [2**-LIMIT, 2**LIMIT] are rescaled (by a power
# of two, which changes no correlation) before squares are summed: no overflow, no underflow.
_EXP_LIMIT = 400


def _column_ranges(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature min and max; NaN and infinities surface here (both propagate)."""
    lo, hi = X.min(axis=0).astype(np.float64), X.max(axis=0).astype(np.float64)
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
        bad = int(X.size - np.count_nonzero(np.isfinite(X)))
        raise QPMError(
            f"features contain {bad} NaN or infinite value(s).",
            "Recompute the features; a diverged backbone produces NaN.",
        )
    return lo, hi


def _power_of_two_scale(lo: np.ndarray, hi: np.ndarray) -> np.ndarray | None:
    """Per-feature factors 2**-e bringing extreme columns to |x| < 1, or None if none is."""
    big = np.maximum(np.abs(lo), np.abs(hi))
    _, exp = np.frexp(big)  # big = mantissa * 2**exp, mantissa in [0.5, 1)
    extreme = (big > 0) & (np.abs(exp) > _EXP_LIMIT)
    if not extreme.any():
        return None
    return np.where(extreme, np.ldexp(1.0, -exp), 1.0)


def class_statistics(X: np.ndarray, labels: np.ndarray, n_classes: int,
                     scale: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-class sums (C, F) and the total centred sum of squares (F,), in ONE pass, O(N*F).

    Rows are visited class by class (one stable argsort of the labels), in float64. Each
    class's rows are centred on their own mean while they are in cache; the total follows
    from ``sum (x - m)^2 = sum_c [sum_{n in c} (x - m_c)^2 + N_c (m_c - m)^2]``, a sum of
    non-negative terms (no cancellation, unlike ``E[x^2] - m^2``).
    """
    order = np.argsort(labels, kind="stable")
    counts = np.bincount(labels, minlength=n_classes)
    sums = np.zeros((n_classes, X.shape[1]))
    within = np.zeros(X.shape[1])
    begin = 0
    for c, count in enumerate(counts.tolist()):
        rows = X[order[begin:begin + count]]
        rows = rows.astype(np.float64) if scale is None else rows * scale
        np.sum(rows, axis=0, out=sums[c])
        rows -= sums[c] / count
        within += np.einsum("ij,ij->j", rows, rows)
        begin += count
    mean = sums.sum(axis=0) / labels.size
    between = counts @ np.square(sums / counts[:, None] - mean)
    return sums, within + between


def feature_class_correlation(
    features: np.ndarray, labels: np.ndarray, n_classes: int
) -> np.ndarray:
    """Pearson correlation (F, C) of every feature with every class indicator.

    With ``p_c`` the share of class c, ``m_f`` the mean of feature f and ``m_cf`` its mean
    over class c, the covariance with the indicator is ``p_c (m_cf - m_f)`` and the
    indicator's standard deviation ``sqrt(p_c (1 - p_c))``, so::

        corr_fc = sqrt(p_c / (1 - p_c)) * (m_cf - m_f) / std_f

    Only per-class sums and the centred sum of squares are needed, both from one pass over
    the features (:func:`class_statistics`): O(N*F), no (F, N) @ (N, C) product.
    Scale-safe: correlation is scale-free, and columns with extreme magnitudes are rescaled
    by exact powers of two first, so features x 1e300 give the same A as the features.
    A constant feature (min == max) or a class that holds every sample (C=1) gives 0.
    """
    X = features
    N = X.shape[0]
    lo, hi = _column_ranges(X)
    scale = _power_of_two_scale(lo, hi)
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    sums, squares = class_statistics(X, labels, n_classes, scale)
    mean = sums.sum(axis=0) / N
    std = np.sqrt(squares / N)
    p = counts / N
    with np.errstate(divide="ignore", invalid="ignore"):
        class_factor = np.where(p < 1.0, np.sqrt(p / (1.0 - p)), 0.0)
        diff = sums / counts[:, None] - mean  # (C, F): m_cf - m_f
        varies = (hi > lo) & (std > 0)
        inv_std = np.where(varies, 1.0 / np.where(varies, std, 1.0), 0.0)
    corr = (diff * inv_std).T * class_factor
    return np.clip(corr, -1.0, 1.0)


def row_cosine_similarity(A: np.ndarray, block: int = 256) -> np.ndarray:
    """R from A: strict upper triangle of row cosines, / max|R|, negatives set to 0.

    Computed in bands of ``block`` rows, each only from its diagonal to the right (half the
    products of a full ``unit @ unit.T``), and finished (lower corner zeroed, largest
    magnitude noted, negatives cut) while the band is in cache; one division pass at the end.
    """
    norms = np.linalg.norm(A, axis=1)
    unit = np.zeros_like(A)
    np.divide(A, norms[:, None], out=unit, where=norms[:, None] > 0)
    F = A.shape[0]
    R = np.zeros((F, F))
    lower = np.tri(block, dtype=bool)  # the diagonal and what lies left of it
    top = 0.0
    for a in range(0, F, block):
        band = R[a:a + block, a:]
        rows = band.shape[0]
        np.matmul(unit[a:a + block], unit[a:].T, out=band)
        np.copyto(band[:, :rows], 0.0, where=lower[:rows, :rows])
        top = max(top, float(band.max()), -float(band.min()))
        np.maximum(band, 0.0, out=band)
    if top > 0:
        R /= top
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
