"""Write every explanation file for one sparse layer into a folder."""

from __future__ import annotations

import json
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qpm.explain.figures import plot_assignment, plot_class_comparison
from qpm.explain.gallery import save_feature_images
from qpm.explain.html import write_index
from qpm.explain.structure import ClassPair, explanation_dict
from qpm.io import atomic_write


@dataclass
class GalleryImage:
    """One of a feature's top images: where to find it and what to print under it."""

    key: Hashable  # into the ``images``/``maps`` dicts
    caption: str
    record: dict  # JSON-ready facts about it (split, index, class, activation)


def write_explanations(
    out_dir: str | Path,
    weight: np.ndarray,
    selection: np.ndarray | None,
    class_names: list[str],
    *,
    examples: dict[int, Hashable],
    images: dict[Hashable, np.ndarray],
    maps: dict[Hashable, np.ndarray],
    gallery: dict[int, list[GalleryImage]] | None = None,
    feature_names: dict[int, str] | None = None,
    model_type: str = "qpm",
    title: str = "",
    max_figures: int = 60,
    extra: dict | None = None,
    local: dict | None = None,
) -> dict[str, Path]:
    """explanation.json, assignment.png, figures/pair_A_B.png, gallery/*.png, index.html.

    ``examples`` maps a class to the key of its example image; ``images[key]`` is an image
    as (H, W) or (H, W, 3) in [0, 1] and ``maps[key]`` its (n, h, w) activation maps of the
    layer's n selected features (in ``selection`` order). ``gallery`` maps a backbone
    feature to its top images. At most ``max_figures`` comparison figures are drawn (pairs
    sharing all but one feature first, then each remaining class with its closest class);
    the JSON lists every pair. ``local``: local explanations with CHiQPM's tree, drawn
    already (``{"examples": [{"figure": relative path, ...}], "coverage": ...}``), listed in
    the JSON and shown on the page.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sel = np.arange(np.asarray(weight).shape[1]) if selection is None else np.asarray(selection)
    column = {int(f): j for j, f in enumerate(sel)}
    expl = explanation_dict(weight, sel, class_names, feature_names, model_type, extra)
    paths = {"assignment": plot_assignment(weight, sel, class_names, out_dir / "assignment.png",
                                           feature_names)}

    def fmap(key: Hashable) -> dict[int, np.ndarray]:
        return {int(f): np.asarray(m) for f, m in zip(sel, maps[key], strict=True)}

    drawn = 0
    for p in [*expl["similar_pairs"], *expl["closest_pairs"]]:
        a, b = p["classes"]
        if drawn >= max_figures or a not in examples or b not in examples:
            continue
        pair = ClassPair(a, b, tuple(p["shared"]), tuple(p["distinguishing"][str(a)]),
                         tuple(p["distinguishing"][str(b)]))
        ka, kb = examples[a], examples[b]
        rel = f"figures/pair_{a}_{b}.png"
        plot_class_comparison(out_dir / rel, pair, (images[ka], images[kb]),
                              (fmap(ka), fmap(kb)), class_names, feature_names)
        p["figure"] = rel
        drawn += 1
    for feat in expl["features"]:
        f = feat["index"]
        top = (gallery or {}).get(f)
        if not top:
            continue
        files = save_feature_images(out_dir / "gallery", f, [images[g.key] for g in top],
                                    [maps[g.key][column[f]] for g in top])
        feat["gallery"] = [{"image": f"gallery/{name}", "caption": g.caption, **g.record}
                           for name, g in zip(files, top, strict=True)]
    expl["examples"] = {str(c): _json_key(k) for c, k in examples.items()}
    if local:
        expl["local"] = local
    text = json.dumps(expl, indent=2) + "\n"
    paths["json"] = atomic_write(out_dir / "explanation.json", lambda fh: fh.write(text), "w")
    paths["html"] = write_index(out_dir, expl, title)
    return paths


def _json_key(key: Hashable):
    return list(key) if isinstance(key, tuple) else key
