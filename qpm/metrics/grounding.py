"""Structural Grounding: does the model's class-similarity structure match CUB's attributes?"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from qpm.errors import QPMError

CUB_ATTRIBUTE_FILE = Path("attributes") / "class_attribute_labels_continuous.txt"


def load_cub_class_attributes(root: str | Path) -> np.ndarray:
    """CUB's (200, 312) per-class attribute percentages from ``ROOT/attributes/...``.

    ``root`` is the CUB_200_2011 folder (the one with images.txt); the file lies at
    ``attributes/class_attribute_labels_continuous.txt`` there (or under ``CUB_200_2011/``).
    """
    root = Path(root)
    for candidate in (root / CUB_ATTRIBUTE_FILE, root / "CUB_200_2011" / CUB_ATTRIBUTE_FILE):
        if candidate.is_file():
            return np.loadtxt(candidate, dtype=np.float64, ndmin=2)
    raise QPMError(
        f"CUB attribute file {CUB_ATTRIBUTE_FILE} not found under {root}.",
        "Point the dataset root at the extracted CUB_200_2011 folder.",
    )


def _cosine_rows(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    norm = np.linalg.norm(m, axis=1, keepdims=True)
    unit = m / np.where(norm > 0, norm, 1.0)
    sim = unit @ unit.T
    np.fill_diagonal(sim, 0.0)
    return sim


def class_similarity_from_weights(weight: np.ndarray) -> np.ndarray:
    """(C, C) cosine similarity of the classes' weight rows, zero diagonal.

    For a binary assignment with k features per class this is (shared features) / k.
    """
    return _cosine_rows(weight)


def structural_grounding(
    weight: np.ndarray, class_attributes: np.ndarray, top: int = 50
) -> float:
    """Agreement of the model's class similarity with the attribute-based one (reference).

    Both (C, C) similarity matrices are symmetric with a zero diagonal: the model's is the
    cosine similarity of the classes' weight rows, the ground truth the cosine similarity of
    their attribute vectors (C, A). Flatten both, take the ``top`` entries (default 50, i.e.
    25 class pairs, each pair counted twice) where the ground truth is largest, and divide
    the model's sum over them by the ground truth's. 0 when the most similar classes share
    no features, 1 when the model reproduces the attribute similarity on them.
    """
    w = np.asarray(weight, dtype=np.float64)
    attrs = np.asarray(class_attributes, dtype=np.float64)
    if w.shape[0] != attrs.shape[0]:
        raise ValueError(f"{w.shape[0]} classes in the weights but {attrs.shape[0]} in attributes")
    model_sim = class_similarity_from_weights(w).ravel()
    gt_sim = _cosine_rows(attrs).ravel()
    order = np.argsort(gt_sim, kind="stable")[::-1][:top]
    denom = gt_sim[order].sum()
    if denom <= 0:
        raise ValueError("the attribute vectors of the top class pairs are not similar at all")
    return float(model_sim[order].sum() / denom)
