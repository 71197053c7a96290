"""The local-explanation figures with CHiQPM's tree that ``qpm explain`` puts on its page."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from qpm import logs

log = logs.get("explain")

FOLDER = "local"


def local_examples(model, datasets: dict, examples: dict, out_dir: Path, count: int,
                   batch_size: int) -> dict | None:
    """Draw up to ``count`` of the class examples (``examples``: class -> (split, index))
    whose trees hold the most classes; None for a layer without a hierarchy. Marks each
    image's prediction set when the model has a calibration (at its coverage)."""
    import torch
    from torch.utils.data import Subset

    from qpm.conformal.paths import is_hierarchical
    from qpm.errors import QPMError
    from qpm.inference.conformal import dataset_outputs

    weight, _ = model.layer()
    if count <= 0 or is_hierarchical(weight) is not None or not examples:
        return None
    keys = sorted(examples.items())
    by_split: dict[str, list[tuple[int, int]]] = {}
    for cls, (split, i) in keys:
        by_split.setdefault(split, []).append((cls, i))
    size = {}
    for split, items in by_split.items():
        out, _ = dataset_outputs(model, Subset(datasets[split], [i for _, i in items]),
                                 batch_size)
        depth = out.depth()
        size.update({cls: int((d >= 1).sum()) for (cls, _), d in zip(items, depth,
                                                                      strict=True)})
    chosen = sorted(size, key=lambda c: (-size[c], c))[:count]
    try:
        calibration = model.calibration()
        coverage = calibration.coverage
    except QPMError as exc:
        log.info(f"no prediction sets on the page: {exc}")
        coverage = None
    (out_dir / FOLDER).mkdir(parents=True, exist_ok=True)
    entries = []
    for cls in chosen:
        split, i = examples[cls]
        x = datasets[split][i][0]
        expl = model.explain(torch.as_tensor(x)[None], coverage=coverage)
        rel = f"{FOLDER}/{split}_{i}.png"
        expl.save(out_dir / rel)
        names = [model.class_names[c] for c in (expl.prediction_set or [])]
        entries.append({
            "figure": rel, "split": split, "index": int(i), "class": int(cls),
            "class_name": model.class_names[cls], "predicted": expl.predicted,
            "predicted_name": expl.predicted_name, "classes_in_tree": len(
                expl.hierarchy.classes),
            "prediction_set": None if expl.sets is None else expl.sets.classes[0],
            "prediction_set_names": names if expl.sets is not None else None,
        })
    return {"examples": entries, "coverage": coverage,
            "calibration": None if coverage is None else calibration.split_text,
            "per_class": int(np.count_nonzero(weight[0]))}
