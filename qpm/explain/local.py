"""The figure of one image's local explanation: why the predicted class and not the
runner-up."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from qpm.explain.figures import panel_grid, save_figure
from qpm.explain.heatmaps import colour, overlay, scale_maps
from qpm.text import drawn_as_plain_text, printable, shorten


def percent(p: float) -> str:
    """A probability as a percentage that never rounds to a flat 0% or 100%."""
    if p >= 0.9995:
        return ">99.9%"
    if p < 0.0005:
        return "<0.1%"
    return f"{100 * p:.1f}%"


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
    order = [f for f in mine if f not in shared] + shared + [f for f in theirs
                                                               if f not in shared]
    name_p, name_r = printable(expl.predicted_name), printable(expl.runner_up_name)
    ncol = 1 + len(order)
    bar_h = 2.0
    fig, axes, (width, height) = panel_grid(1, ncol, panel, top=0.75, bottom=bar_h + 0.75)
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
    ax = fig.add_axes((left / width, 0.45 / height, (width - left - 0.05) / width,
                       bar_h / height))
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
    return save_figure(fig, path, dpi=dpi)
