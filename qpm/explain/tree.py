"""Drawing CHiQPM's hierarchical explanation of one image: the tree of class paths.

Top to bottom: the image, then each feature in the order the classes' paths take them (a
circle in the feature's colour, as large as its activation relative to the strongest one),
then the classes, below the last feature of their path that is active on the image; classes
whose paths stop at the same node are listed together. The predicted class's path is drawn
black and its name bold; with a conformal set, the paths to its classes are green and their
names too. ``tree`` is a :class:`qpm.conformal.Hierarchy` (read through its attributes only).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from qpm.explain.figures import pyplot, save_figure
from qpm.text import drawn_as_plain_text, printable, shorten

OTHER = (0.62, 0.62, 0.62)  # features without a colour of their own in the figure
IN_SET = "#1a9641"
NAMES_PER_GROUP = 4  # then "+n more"


def slots(tree) -> int:
    """How many class groups (leaf slots) the drawing of ``tree`` has side by side."""
    return len(_layout(tree)[1])


def _layout(tree) -> tuple[dict, list]:
    """x, y of every node (keyed by its path) and the class groups [(node, x, y)]: one leaf
    slot per class group, parents centred over their children, the predicted path first."""
    pred_path = tree.node_of(tree.predicted).path
    pos: dict[tuple, tuple[float, float]] = {}
    groups: list = []
    slot = [0]

    def visit(node) -> float:
        kids = sorted(node.children, key=lambda ch: (pred_path[:len(ch.path)] != ch.path,
                                                     -ch.activation))
        xs = [visit(ch) for ch in kids]
        if node.ending:
            x = float(slot[0])
            slot[0] += 1
            groups.append((node, x, -(node.depth + 1)))
            xs.append(x)
        x = sum(xs) / len(xs) if xs else float(slot[0])
        pos[node.path] = (x, -float(node.depth))
        return x

    visit(tree.root)
    return pos, groups


def _group_label(classes: list[int], tree, names: list[str], in_set: set[int]) -> list:
    """(text, bold, colour) lines for the classes of one group: predicted and set first."""
    order = sorted(classes, key=lambda c: (c != tree.predicted, c not in in_set, c))
    lines = [(shorten(printable(names[c]), 26), c == tree.predicted,
              IN_SET if c in in_set else "#222") for c in order[:NAMES_PER_GROUP]]
    if len(order) > NAMES_PER_GROUP:
        rest = order[NAMES_PER_GROUP:]
        more = sum(c in in_set for c in rest)
        lines.append((f"+{len(rest)} more" + (f" ({more} in the set)" if more else ""),
                      False, IN_SET if more else "#555"))
    return lines


def draw_hierarchy(ax, tree, class_names: list[str], colours: dict[int, tuple] | None = None,
                   prediction_set: Iterable[int] | None = None, set_label: str = "") -> None:
    """Draw ``tree`` into the matplotlib axes ``ax``."""
    colours = colours or {}
    in_set = set(prediction_set or ())
    pos, groups = _layout(tree)
    nodes = list(tree.root.walk())
    top = max((n.activation for n in nodes if n.depth), default=1.0) or 1.0
    pred_end = tree.node_of(tree.predicted).path
    set_ends = [tree.node_of(c).path for c in in_set if c in tree.paths]
    for node in nodes:
        for ch in node.children:
            _edge(ax, pos[node.path], pos[ch.path], pred_end[:len(ch.path)] == ch.path,
                  any(e[:len(ch.path)] == ch.path for e in set_ends))
    for node, x, y in groups:
        _edge(ax, pos[node.path], (x, y + 0.35), tree.predicted in node.ending,
              bool(in_set & set(node.ending)))
        lines = _group_label(node.ending, tree, class_names, in_set)
        for i, (text, bold, colour) in enumerate(lines):
            ax.annotate(text, (x, y + 0.35), xytext=(9 * i - 4.5 * (len(lines) - 1), -3),
                        textcoords="offset points", rotation=90, ha="center", va="top",
                        fontsize=8, fontweight="bold" if bold else "normal", color=colour)
    ax.plot(*pos[()], "ks", markersize=6)
    ax.annotate("image", pos[()], xytext=(7, 0), textcoords="offset points", fontsize=7,
                va="center", color="#444")
    for node in nodes:
        if not node.depth:
            continue
        x, y = pos[node.path]
        size = 5 + 13 * max(node.activation, 0.0) / top
        ax.plot(x, y, "o", markersize=size, color=colours.get(node.feature, OTHER),
                markeredgecolor="white", zorder=3)
        ax.annotate(f"feature {node.feature}\n{node.activation:.2g}", (x, y),
                    xytext=(size / 2 + 2, 2), textcoords="offset points", fontsize=6.5,
                    va="bottom", color="#333", zorder=4)
    n_slots = max((x for _, x, _ in groups), default=0) + 1
    ax.set_xlim(-0.7, n_slots - 0.3)
    ax.set_ylim(-(tree.per_class + 1) - 2.4, 0.5)
    ax.axis("off")
    legend = "black: the predicted class's path (its name in bold)"
    if in_set:
        legend += f"; green: {set_label or 'the prediction set'}"
    ax.set_title(f"how the classes' features line up on this image (largest activation "
                 f"first)\n{legend}", fontsize=8, loc="left", color="#333")


def _edge(ax, a, b, predicted: bool, in_set: bool) -> None:
    if in_set:
        ax.plot([a[0], b[0]], [a[1], b[1]], color=IN_SET, lw=5, alpha=0.55,
                solid_capstyle="round", zorder=1)
    ax.plot([a[0], b[0]], [a[1], b[1]], color="black" if predicted else "#aaa",
            lw=1.8 if predicted else 1.0, zorder=2)


@drawn_as_plain_text
def plot_hierarchy(tree, class_names: list[str], path: str | Path,
                   colours: dict[int, tuple] | None = None,
                   prediction_set: Iterable[int] | None = None, set_label: str = "",
                   dpi: int = 110) -> Path:
    """The tree alone as a PNG (the demo; ``qpm predict --explain`` draws it under the
    heatmaps through :func:`draw_hierarchy`)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(6.0, 0.75 * slots(tree) + 2.5),
                                    0.6 * (tree.per_class + 2) + 2.2))
    draw_hierarchy(ax, tree, class_names, colours, prediction_set, set_label)
    return save_figure(fig, path, dpi=dpi)
