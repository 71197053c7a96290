"""Write every explanation file for one sparse layer into a folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from qpm.explain.figures import plot_assignment, plot_class_comparison
from qpm.explain.html import write_index
from qpm.explain.structure import ClassPair, explanation_dict
from qpm.pipeline.artifacts import atomic_write


def write_explanations(
    out_dir: str | Path,
    weight: np.ndarray,
    selection: np.ndarray | None,
    class_names: list[str],
    *,
    examples: dict[int, int],
    images: dict[int, np.ndarray],
    maps: dict[int, np.ndarray],
    feature_names: dict[int, str] | None = None,
    model_type: str = "qpm",
    title: str = "",
    max_figures: int = 60,
    extra: dict | None = None,
) -> dict[str, Path]:
    """explanation.json, assignment.png, figures/pair_A_B.png and index.html in ``out_dir``.

    ``examples`` maps a class to its example image index; ``images[idx]`` is that image as
    (H, W) or (H, W, 3) in [0, 1]; ``maps[idx]`` its (n, h, w) activation maps of the layer's
    n selected features (in ``selection`` order). At most ``max_figures`` comparison figures
    are drawn (pairs sharing all but one feature first, then each remaining class with its
    closest class); the JSON lists every pair.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sel = np.arange(np.asarray(weight).shape[1]) if selection is None else np.asarray(selection)
    expl = explanation_dict(weight, sel, class_names, feature_names, model_type,
                            {**(extra or {}), "examples": {str(c): int(i)
                                                           for c, i in examples.items()}})
    paths = {"assignment": plot_assignment(weight, sel, class_names, out_dir / "assignment.png",
                                           feature_names)}

    def fmap(idx: int) -> dict[int, np.ndarray]:
        return {int(f): np.asarray(m) for f, m in zip(sel, maps[idx], strict=True)}

    drawn = 0
    for p in [*expl["similar_pairs"], *expl["closest_pairs"]]:
        a, b = p["classes"]
        if drawn >= max_figures or a not in examples or b not in examples:
            continue
        pair = ClassPair(a, b, tuple(p["shared"]), tuple(p["distinguishing"][str(a)]),
                         tuple(p["distinguishing"][str(b)]))
        ia, ib = examples[a], examples[b]
        rel = f"figures/pair_{a}_{b}.png"
        plot_class_comparison(out_dir / rel, pair, (images[ia], images[ib]),
                              (fmap(ia), fmap(ib)), class_names, feature_names)
        p["figure"] = rel
        drawn += 1
    text = json.dumps(expl, indent=2) + "\n"
    paths["json"] = atomic_write(out_dir / "explanation.json", lambda fh: fh.write(text), "w")
    paths["html"] = write_index(out_dir, expl, title)
    return paths
