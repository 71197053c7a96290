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


def check_data(folder: str | Path, fingerprint: dict[str, Any], data_root: str | None, *,
               fresh_ok: bool = False) -> bool:
    """QPMError when the run folder was made from other data than ``fingerprint``'s; True
    when data.json must be (re)written.

    data.json says what the data was; without a readable one, the stage records still name
    its hash. A folder with neither cannot tell what it was trained on: a reader (evaluate,
    explain) refuses it rather than take any data for the run's; ``fresh_ok`` (qpm train)
    accepts it when nothing was trained there yet.
    """
    folder = Path(folder)
    path = folder / DATA
    where = f"--data-root {data_root}" if data_root else "this data"
    fix = "Pass the --data-root the run was trained on, or use a new --run-dir for this data."
    old = None
    if path.exists():
        try:
            old = read_json(path)
        except ArtifactError:
            old = None
    if isinstance(old, dict):
        if {k: old.get(k) for k in fingerprint} != fingerprint:
            raise QPMError(f"Run folder {folder} was trained on other data than {where}: "
                           f"{describe_data_change(old, fingerprint)}.", fix)
        return False
    recorded = recorded_data(folder)
    state = "missing" if not path.exists() else "unreadable"
    if recorded and fingerprint_hash(fingerprint) not in recorded:
        raise QPMError(f"Run folder {folder} was trained on other data than {where} (its "
                       f"{DATA} is {state}; its stage records name other data).", fix)
    if not recorded and not fresh_ok:
        raise QPMError(f"Run folder {folder} cannot tell which data it was trained on: its "
                       f"{DATA} is {state} and no stage record names the data.",
                       f"Restore {folder / DATA}, or re-run qpm train there.")
    return True


def recorded_data(folder: Path) -> set[str]:
    """The data hashes the stage records of the run folder and its variants name."""
    from qpm.run_folder.names import RECORDS, VARIANTS
    from qpm.run_folder.records import read_record

    found = set()
    for records in [folder / RECORDS, *sorted((folder / VARIANTS).glob(f"*/{RECORDS}"))]:
        for path in sorted(records.glob("*.json")):
            rec, _ = read_record(path.parent.parent, path.stem)
            if rec is not None and isinstance(rec.inputs.get("data"), str):
                found.add(rec.inputs["data"])
    return found
