"""Matplotlib figures (Agg backend, no display needed): the assignment matrix and class
comparisons showing where each feature is active on an example of each class.

Every label is plain text (see :mod:`qpm.text`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from qpm.explain.heatmaps import colour, overlay, scale_maps
from qpm.explain.structure import ClassPair, feature_label
from qpm.io import atomic_write
from qpm.text import drawn_as_plain_text, printable, shorten, wrap


def pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def panel_grid(rows: int, cols: int, panel: float = 1.9, gap: float = 0.04,
               top: float = 0.8, left: float = 0.3, bottom: float = 0.0):
    """A figure of ``rows`` x ``cols`` square panels of ``panel`` inches, ``gap`` inches
    apart, with ``top`` inches above for titles, ``left`` for row labels and ``bottom``
    below for more axes. Returns (figure, axes array, figure size in inches)."""
    plt = pyplot()
    width = left + cols * panel + (cols - 1) * gap + 0.05
    height = top + rows * panel + (rows - 1) * gap + bottom + 0.05
    fig = plt.figure(figsize=(width, height))
    axes = np.empty((rows, cols), dtype=object)
    for r in range(rows):
        for c in range(cols):
            x = left + c * (panel + gap)
            y = height - top - (r + 1) * panel - r * gap
            ax = fig.add_axes((x / width, y / height, panel / width, panel / height))
            ax.set_xticks([])
            ax.set_yticks([])
            axes[r, c] = ax
    return fig, axes, (width, height)


def save_figure(fig, path: str | Path, dpi: int = 100) -> Path:
    """Write ``fig`` as a PNG atomically and close it."""
    plt = pyplot()
    try:
        return atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=dpi,
                                                         bbox_inches="tight"))
    finally:
        plt.close(fig)


def displayable(image: np.ndarray, mean=None, std=None) -> np.ndarray:
    """A (C, H, W) normalised tensor as an (H, W) or (H, W, 3) float image in [0, 1]."""
    x = np.asarray(image, dtype=np.float64)
    if x.ndim == 3 and x.shape[0] in (1, 3):
        if mean is not None and std is not None:
            x = x * np.asarray(std, dtype=np.float64)[:, None, None]
            x = x + np.asarray(mean, dtype=np.float64)[:, None, None]
        x = x[0] if x.shape[0] == 1 else np.transpose(x, (1, 2, 0))
    lo, hi = float(x.min()), float(x.max())
    if lo >= -0.02 and hi <= 1.02:  # rounding and resampling overshoot
        return np.clip(x, 0, 1)
    return (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)


@drawn_as_plain_text
def plot_assignment(
    weight: np.ndarray,
    selection: np.ndarray | None,
    class_names: list[str],
    path: str | Path,
    feature_names: dict[int, str] | None = None,
    title: str = "",
) -> Path:
    """Heat map of the used features (rows) x classes (columns) of a (C, n) layer."""
    plt = pyplot()
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
    # Gridlines between the cells, so a row or a column can be followed by eye.
    ax.set_xticks(np.arange(-0.5, n_c, 1), minor=True)
    ax.set_yticks(np.arange(-0.5, n_f, 1), minor=True)
    ax.grid(which="minor", color="#b0b0b0", linewidth=0.5 if max(n_c, n_f) < 100 else 0.2)
    ax.tick_params(which="minor", length=0)
    step_c = max(1, n_c // 60)
    step_f = max(1, n_f // 80)
    ax.set_xticks(range(0, n_c, step_c))
    ax.set_xticklabels([printable(class_names[c]) for c in range(0, n_c, step_c)], rotation=90,
                       fontsize=7)
    ax.set_yticks(range(0, n_f, step_f))
    ax.set_yticklabels([feature_label(int(sel[j]), feature_names) for j in used[::step_f]],
                       fontsize=7)
    ax.set_xlabel("class")
    ax.set_ylabel("feature")
    per_class = np.count_nonzero(w, axis=1).mean() if w.size else 0
    ax.set_title(printable(title) if title else f"{n_f} of {w.shape[1]} selected features used, "
                 f"{per_class:.3g} per class on average")
    return save_figure(fig, path)


@drawn_as_plain_text
def plot_class_comparison(
    path: str | Path,
    pair: ClassPair,
    images: tuple[np.ndarray, np.ndarray],
    maps: tuple[dict[int, np.ndarray], dict[int, np.ndarray]],
    class_names: list[str],
    feature_names: dict[int, str] | None = None,
    panel: float = 1.5,
) -> Path:
    """Two rows (an example image of each class), one column per feature of either class.

    As in the QPM reference: the first column shows the images as they are; then the
    features only class ``a`` uses, the shared ones, and those only ``b`` uses, each in its
    own colour over the greyscale image, scaled jointly over the two rows so a feature that
    is weak on one image looks weak (:mod:`qpm.explain.heatmaps`).
    """
    feats = pair.ordered_features()
    names = [printable(class_names[pair.a]), printable(class_names[pair.b])]
    ncol = 1 + len(feats)
    fig, axes, _ = panel_grid(2, ncol, panel, top=0.85, left=0.35)
    sizes = [img.shape[:2] for img in images]
    for row, img in enumerate(images):
        ax = axes[row, 0]
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
        ax.set_ylabel(wrap(names[row], 16), fontsize=12)
    axes[0, 0].set_title("example image", fontsize=10, color="#555")
    for col, f in enumerate(feats, start=1):
        rgb = colour(col - 1)
        heats = scale_maps([maps[0][f], maps[1][f]], sizes)
        for row, img in enumerate(images):
            axes[row, col].imshow(overlay(img, heats[row], rgb))
        owner = names[0] if f in pair.only_a else names[1]
        kind = "shared" if f in pair.shared else shorten(f"only {owner}", 18)
        axes[0, col].set_title(f"{shorten(feature_label(f, feature_names), 18)}\n{kind}",
                               fontsize=10,
                               color="black" if f in pair.shared else rgb)
    fig.suptitle(f"{names[0]} vs {names[1]}: {len(pair.shared)} shared feature(s)",
                 fontsize=12)
    return save_figure(fig, path)
