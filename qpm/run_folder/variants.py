"""Variants: one model type at one setting, side by side in ``variants/<name>/``.

The name reads as the setting: ``qpm-n50-k5-qpm-gurobi-1a2b3c`` is QPM with n=50 features,
k=5 per class, preset qpm, solver gurobi; the last part is a short hash of every other value
the variant depends on (tau rule, time limit, gap, a given assignment's content), so two
settings never share a folder. Which config values make a variant is the model type's to say
(:mod:`qpm.pipeline.stages`); this module only turns those values into a name and a folder.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from qpm.run_folder.names import VARIANTS

# Values shown in the name itself, in this order; the others go into the hash.
NAMED = ("n_features", "per_class", "preset", "solver")
_PREFIX = {"n_features": "n", "per_class": "k"}
# Switches shown as a word when they are on (``sldd-n50-k5-reference-quirks``).
FLAGS = {"reference_quirks": "reference-quirks"}


def variant_name(model_type: str, values: dict[str, Any]) -> str:
    """``model_type``-n<N>-k<K>[-preset][-solver][-flags][-hash of the other values]."""
    parts = [model_type]
    for key in NAMED:
        if key in values:
            parts.append(f"{_PREFIX.get(key, '')}{values[key]}")
    parts += [word for key, word in FLAGS.items() if values.get(key)]
    rest = {k: v for k, v in sorted(values.items()) if k not in NAMED and k not in FLAGS}
    if rest:
        blob = json.dumps(rest, sort_keys=True, default=str).encode()
        parts.append(hashlib.sha256(blob).hexdigest()[:6])
    return re.sub(r"[^A-Za-z0-9._-]", "_", "-".join(map(str, parts)))


def variant_dir(run_dir: str | Path, name: str) -> Path:
    return Path(run_dir) / VARIANTS / name


def relative_dir(name: str) -> str:
    """The variant's folder relative to the run folder (what stages and records name)."""
    return f"{VARIANTS}/{name}"
