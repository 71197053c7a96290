"""Matplotlib figures (Agg backend, no display needed): the assignment matrix and class
comparisons showing where each feature is active on an example of each class."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from qpm.explain.structure import ClassPair, feature_label
from qpm.pipeline.artifacts import atomic_write


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path, dpi: int = 100) -> Path:
    plt = _pyplot()
    try:
        return atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=dpi,
                                                         bbox_inches="tight"))
    finally:
        plt.close(fig)


def choose_examples(labels: np.ndarray, scores: np.ndarray) -> dict[int, int]:
    """Class -> index of its example image: correctly classified with the highest score.

    ``scores`` are (N, C) logits. A class none of whose images is classified correctly gets
    its highest-scoring image anyway; a class without images gets none.
    """
    labels = np.asarray(labels)
    scores = np.asarray(scores)
    pred = scores.argmax(axis=1)
    out = {}
    for c in range(scores.shape[1]):
        own = np.flatnonzero(labels == c)
        if own.size == 0:
            continue
        correct = own[pred[own] == c]
        pool = correct if correct.size else own
        out[c] = int(pool[np.argmax(scores[pool, c])])
    return out


def displayable(image: np.ndarray, mean=None, std=None) -> np.ndarray:
    """A (C, H, W) normalised tensor as an (H, W) or (H, W, 3) float image in [0, 1]."""
    x = np.asarray(image, dtype=np.float64)
    if x.ndim == 3 and x.shape[0] in (1, 3):
        if mean is not None and std is not None:
            x = x * np.asarray(std, dtype=np.float64)[:, None, None]
            x = x + np.asarray(mean, dtype=np.float64)[:, None, None]
        x = x[0] if x.shape[0] == 1 else np.transpose(x, (1, 2, 0))
    lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > 1:
        x = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
    return x


def plot_assignment(
    weight: np.ndarray,
    selection: np.ndarray | None,
    class_names: list[str],
    path: str | Path,
    feature_names: dict[int, str] | None = None,
    title: str = "",
) -> Path:
    """Heat map of the used features (rows) x classes (columns) of a (C, n) layer."""
    plt = _pyplot()
    w = np.asarray(weight, dtype=np.float64)
    sel = np.arange(w.shape[1]) if selection is None else np.asarray(selection)
    used = np.flatnonzero(np.any(w != 0, axis=0))
    m = w[:, used].T  # (features, classes)
    n_f, n_c = m.shape
    fig, ax = plt.subplots(figsize=(min(2 + 0.28 * n_c, 40), min(1.5 + 0.22 * n_f, 40)))
    vmax = float(np.abs(m).max()) if m.size else 1.0
    binary = bool(np.all((m == 0) | (m == 1)))
    cmap = "Greys" if binary else "coolwarm"
    ax.imshow(m, cmap=cmap, vmin=0 if binary else -vmax, vmax=vmax, aspect="auto",
              interpolation="nearest")
    step_c = max(1, n_c // 60)
    step_f = max(1, n_f // 80)
    ax.set_xticks(range(0, n_c, step_c))
    ax.set_xticklabels([str(class_names[c]) for c in range(0, n_c, step_c)], rotation=90,
                       fontsize=7)
    ax.set_yticks(range(0, n_f, step_f))
    ax.set_yticklabels([feature_label(int(sel[j]), feature_names) for j in used[::step_f]],
                       fontsize=7)
    ax.set_xlabel("class")
    ax.set_ylabel("feature")
    per_class = np.count_nonzero(w, axis=1).mean() if w.size else 0
    ax.set_title(title or f"{n_f} features, {per_class:.3g} per class on average")
    return _save(fig, path)


def plot_class_comparison(
    path: str | Path,
    pair: ClassPair,
    images: tuple[np.ndarray, np.ndarray],
    maps: tuple[dict[int, np.ndarray], dict[int, np.ndarray]],
    class_names: list[str],
    feature_names: dict[int, str] | None = None,
) -> Path:
    """Two rows (one example image of each class), one column per used feature.

    Columns: the image, then the features distinguishing class ``a``, the shared ones, and
    those distinguishing class ``b``; each cell overlays the feature's activation map on the
    image (one colour scale per column, so the two rows compare directly).
    """
    plt = _pyplot()
    feats = pair.ordered_features()
    ncol = 1 + len(feats)
    fig, axes = plt.subplots(2, ncol, figsize=(1.7 * ncol, 3.9), squeeze=False)
    colours = {f: "tab:blue" for f in pair.only_a}
    colours.update({f: "tab:orange" for f in pair.only_b})
    for row, (cls, img, fmap) in enumerate(zip((pair.a, pair.b), images, maps, strict=True)):
        h, w = img.shape[:2]
        cmap = "gray" if img.ndim == 2 else None
        ax = axes[row, 0]
        ax.imshow(img, cmap=cmap, vmin=0, vmax=1)
        ax.set_title(str(class_names[cls]), fontsize=9,
                     color="tab:blue" if row == 0 else "tab:orange")
        for col, f in enumerate(feats, start=1):
            ax = axes[row, col]
            ax.imshow(img, cmap=cmap, vmin=0, vmax=1)
            top = max(float(np.max(maps[0][f])), float(np.max(maps[1][f])), 1e-12)
            ax.imshow(fmap[f], cmap="jet", alpha=0.5, vmin=0, vmax=top,
                      extent=(-0.5, w - 0.5, h - 0.5, -0.5),
                      interpolation="bilinear")
            if row == 0:
                owner = pair.a if f in pair.only_a else pair.b
                kind = "shared" if f in pair.shared else f"only {class_names[owner]}"
                ax.set_title(f"{feature_label(f, feature_names)}\n{kind}", fontsize=7,
                             color=colours.get(f, "black"))
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{class_names[pair.a]} vs {class_names[pair.b]}: "
                 f"{len(pair.shared)} shared feature(s)", fontsize=10)
    return _save(fig, path)
