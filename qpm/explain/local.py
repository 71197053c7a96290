"""The figure of one image's local explanation: why the predicted class and not the
runner-up."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from qpm.explain.figures import panel_grid, save_figure
from qpm.explain.heatmaps import colour, overlay, scale_maps
from qpm.explain.tree import draw_hierarchy, slots
from qpm.text import drawn_as_plain_text, printable, shorten


def percent(p: float) -> str:
    """A probability as a percentage that never rounds to a flat 0% or 100%."""
    if p >= 0.9995:
        return ">99.9%"
    if p < 0.0005:
        return "<0.1%"
    return f"{100 * p:.1f}%"


def feature_order(expl) -> list[int]:
    """The figure's feature columns: only the predicted class's, shared, only the runner-up's."""
    mine = [f.index for f in expl.features]
    theirs = [f.index for f in expl.runner_up_features]
    shared = [f for f in mine if f in theirs]
    return [f for f in mine if f not in shared] + shared + [f for f in theirs
                                                            if f not in shared]


def feature_colours(expl) -> dict[int, tuple[float, float, float]]:
    """Each shown feature's colour in the local figure (the tree's dots use the same)."""
    return {f: colour(col) for col, f in enumerate(feature_order(expl))}


@drawn_as_plain_text
def plot_local(expl, path: str | Path, dpi: int = 110, panel: float = 1.9) -> Path:
    """Top: the image, then each feature of the predicted class and of the runner-up (only
    the predicted class's first, shared in the middle, only the runner-up's last) in its own
    colour, scaled jointly so a weakly active feature looks weak. Bottom: each feature's
    contribution (weight x activation) to the two classes' logits.

    ``expl`` is a :class:`qpm.inference.LocalExplanation`.
    """
    mine = [f.index for f in expl.features]
    theirs = [f.index for f in expl.runner_up_features]
    shared = [f for f in mine if f in theirs]
    order = feature_order(expl)
    name_p, name_r = printable(expl.predicted_name), printable(expl.runner_up_name)
    ncol = 1 + len(order)
    bar_h = 2.0
    tree_h = 0.0 if expl.hierarchy is None else 0.6 * expl.hierarchy.per_class + 3.4
    fig, axes, (width, height) = panel_grid(1, ncol, panel, top=0.75,
                                            bottom=bar_h + 0.75 + tree_h)
    img = expl.image
    axes[0, 0].imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
    axes[0, 0].set_title(printable(Path(expl.source).name)[:28], fontsize=8)
    heats = scale_maps([expl.maps[f] for f in order], [img.shape[:2]] * len(order))
    for col, (f, heat) in enumerate(zip(order, heats, strict=True)):
        ax = axes[0, col + 1]
        ax.imshow(overlay(img, heat, colour(col)))
        owner = "shared" if f in shared else shorten(
            f"only {name_p}" if f in mine else f"only {name_r}", 22)
        ax.set_title(f"feature {f}\n{owner}", fontsize=8,
                     color="black" if f in shared else colour(col))
    left = 0.3 + panel + 0.04  # the bars sit under the feature panels
    ax = fig.add_axes((left / width, (0.45 + tree_h) / height,
                       (width - left - 0.05) / width, bar_h / height))
    part = {f.index: f.contribution for f in expl.features}
    part_r = {f.index: f.contribution for f in expl.runner_up_features}
    x = np.arange(len(order))
    ax.bar(x - 0.2, [part.get(f, 0.0) for f in order], 0.38, color="#1f4e99",
           label=f"{name_p} (predicted, {percent(expl.probability)}): logit "
                 f"{expl.logit:.2f}")
    ax.bar(x + 0.2, [part_r.get(f, 0.0) for f in order], 0.38, color="#c9781c",
           label=f"{name_r} (runner-up, {percent(expl.runner_up_probability)}): logit "
                 f"{expl.runner_up_logit:.2f}")
    ax.axhline(0, color="#666", lw=0.8)
    ax.set_xticks(x, [f"feature {f}" for f in order], fontsize=8)
    for tick, col in zip(ax.get_xticklabels(), range(len(order)), strict=True):
        tick.set_color("black" if order[col] in shared else colour(col))
    ax.set_xlim(-0.5, len(order) - 0.5)
    ax.set_ylabel("part of the logit\n(weight x activation)", fontsize=8)
    ax.legend(fontsize=8, loc="best", frameon=False)
    ax.tick_params(axis="y", labelsize=8)
    fig.suptitle(f"predicted {name_p} ({percent(expl.probability)}), "
                 f"runner-up {name_r} ({percent(expl.runner_up_probability)})", fontsize=10)
    if expl.hierarchy is not None:  # CHiQPM's tree, in the heat maps' feature colours
        tree_w = min(width - 0.4, 0.75 * slots(expl.hierarchy) + 3.0)
        tree_ax = fig.add_axes(((width - tree_w) / 2 / width, 0.05 / height, tree_w / width,
                                (tree_h - 0.4) / height))
        sets = expl.sets
        draw_hierarchy(tree_ax, expl.hierarchy, expl.class_names, feature_colours(expl),
                       None if sets is None else sets.classes[0],
                       "" if sets is None else set_caption(sets))
    return save_figure(fig, path, dpi=dpi)


def set_caption(sets) -> str:
    """'the 90% prediction set (CHiQPM (hierarchical), level 2)'."""
    level = "" if sets.threshold.level is None else f", level {sets.threshold.level}"
    return f"the {100 * sets.coverage:g}% prediction set ({sets.title}{level})"
