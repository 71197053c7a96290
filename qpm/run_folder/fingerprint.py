"""The data fingerprint: a run folder refuses to be used with other data than it was made from."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from qpm.errors import QPMError
from qpm.io import ArtifactError, read_json
from qpm.run_folder.names import DATA
from qpm.text import printable, shorten


def _shown(text: str, limit: int = 300) -> str:
    # Names shown to another user: no control characters, bounded length.
    return shorten(printable(text), limit)


def data_fingerprint(data, root: str | Path | None) -> dict[str, Any]:
    """Class names, per-split counts and a hash of the file list with sizes (or of the pixels
    of an in-memory set): cheap (one stat per file), and the same after the folder moved."""
    splits = {"train": data.train_eval, "test": data.test}
    digest = hashlib.sha256()
    for name, ds in splits.items():
        split = getattr(ds, "split", None)
        digest.update(f"[{name}]\n".encode())
        if split is None:  # a dataset type this function does not know: counts only
            continue
        digest.update(split.labels.astype("<i8").tobytes())
        if split.images is not None:
            digest.update(split.images.numpy().tobytes())
        for path in split.paths or []:
            rel = os.path.relpath(path, root) if root else str(path)
            try:
                size = os.stat(path).st_size
            except OSError:
                size = -1
            digest.update(f"{rel}\t{size}\n".encode("utf-8", "surrogateescape"))
        if split.boxes is not None:
            digest.update(split.boxes.astype("<f8").tobytes())
    return {"dataset": data.name, "class_names": list(data.class_names),
            "counts": {name: len(ds) for name, ds in splits.items()},
            "files_sha256": digest.hexdigest()}


def fingerprint_hash(fingerprint: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()


def describe_data_change(old: dict[str, Any], new: dict[str, Any]) -> str:
    if old.get("class_names") != new["class_names"]:
        a, b = old.get("class_names") or [], new["class_names"]
        both = min(len(a), len(b))
        first = next((i for i in range(both) if a[i] != b[i]), both)
        shown = (f"'{_shown(a[first], 40)}' vs '{_shown(b[first], 40)}'"
                 if first < both else "")
        return (f"other classes ({len(a)} vs {len(b)} classes"
                + (f"; class {first}: {shown}" if shown else "") + ")")
    if old.get("counts") != new["counts"]:
        return f"other image counts ({old.get('counts')} vs {new['counts']})"
    return "other files or file sizes"


def check_data(folder: str | Path, fingerprint: dict[str, Any], data_root: str | None) -> bool:
    """QPMError when the folder was made from other data; True when data.json is missing."""
    path = Path(folder) / DATA
    if not path.exists():
        return True
    try:
        old = read_json(path)
    except ArtifactError:
        return True  # rewritten by the next train run; the stage records still hold its hash
    if not isinstance(old, dict):
        return True
    if {k: old.get(k) for k in fingerprint} != fingerprint:
        where = f"--data-root {data_root}" if data_root else "this data"
        raise QPMError(
            f"Run folder {folder} was trained on other data than {where}: "
            f"{describe_data_change(old, fingerprint)}.",
            "Pass the --data-root the run was trained on, or use a new --run-dir for this data.")
    return False
