"""The run folder's one owner: its file names, its lock, its stage records, its data fingerprint.

A run folder (``runs/<dataset>/<arch>/<seed>/`` or ``--run-dir``) holds::

    config.json           the resolved TrainConfig
    data.json             the data it was trained on: class names, counts, files and sizes
    stages/<stage>.json   one record per finished stage (see StageRecord)
    metrics.json          accuracies and metrics per model type
    dense.pt features.npz similarities.npz assignment.json qpm.pt ...   the artifacts
    <stage>.ckpt          the epoch checkpoint of a training stage in progress
    .lock                 held (an OS lock) by the one process that writes the folder

A stage's record names the sha256 of the artifacts it was computed from and of the artifact it
wrote, so an artifact edited by hand, copied from another run or left by another writer is
found out and recomputed. The records are one file per stage, so an unreadable record costs
only its own stage.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from qpm.errors import QPMError
from qpm.io import ArtifactError, is_temp_name, read_json, write_json

# --- names ----------------------------------------------------------------------------------

CONFIG = "config.json"
DATA = "data.json"
METRICS = "metrics.json"
RECORDS = "stages"
LOCK = ".lock"
DENSE = "dense.pt"
FEATURES = "features.npz"
SIMILARITIES = "similarities.npz"
ASSIGNMENT = "assignment.json"
SLDD_LAYER = "sldd_layer.npz"


def model_file(model_type: str) -> str:
    """The model file a model type's last stage writes (dense.pt, qpm.pt, sldd.pt, ...)."""
    return f"{model_type}.pt"


def plot_file(model_type: str) -> str:
    """The picture of a sparse model's assignment matrix."""
    return "assignment.png" if model_type == "qpm" else f"{model_type}_assignment.png"


def checkpoint_file(stage: str) -> str:
    return f"{stage}.ckpt"


# --- the lock -------------------------------------------------------------------------------


def _printable(text: str, limit: int = 300) -> str:
    # The holder line is shown to another user: no control characters, bounded length.
    from qpm.text import printable, shorten

    return shorten(printable(text), limit)


class RunLock:
    """An exclusive OS lock (flock) on ``FOLDER/.lock``, held for as long as the process
    writes the folder. The lock file names its holder for whoever is refused. Within one
    process the lock is re-entrant: a command may take it early and the runner again."""

    def __init__(self, folder: str | Path, command: str | None = None, *,
                 create: bool = True) -> None:
        self.folder = Path(folder)
        self.command = command or " ".join(["qpm", *sys.argv[1:]])
        self.create = create  # False: a folder that cannot hold a lock is read unlocked
        self._key: str | None = None

    def acquire(self) -> RunLock:
        key = os.path.realpath(self.folder)
        if key in _HELD:
            _HELD[key][1] += 1
            self._key = key
            return self
        fd = self._open()
        if fd is None:
            return self
        _take(fd, self.folder)
        since = time.strftime("%Y-%m-%d %H:%M:%S")
        note = (f"pid {os.getpid()} on {socket.gethostname()} "
                f"({_printable(self.command)}, since {since})")
        os.ftruncate(fd, 0)
        os.pwrite(fd, note.encode("utf-8", "replace"), 0)
        _HELD[key] = [fd, 1]
        self._key = key
        return self

    def _open(self) -> int | None:
        try:
            if self.create:
                self.folder.mkdir(parents=True, exist_ok=True)
            return os.open(self.folder / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            if not self.create:
                return None  # e.g. read-only: nobody can write it, the command reports later
            what = "is a file" if self.folder.is_file() else f"cannot be written ({exc.strerror})"
            raise QPMError(f"Run folder {self.folder} {what}.",
                           "Pass a writable folder with --run-dir.") from None

    def release(self) -> None:
        if self._key is None:
            return
        held = _HELD[self._key]
        held[1] -= 1
        if held[1] == 0:
            os.ftruncate(held[0], 0)  # a later reader sees no holder
            os.close(held[0])  # closing drops the flock
            del _HELD[self._key]
        self._key = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


# realpath of a locked folder -> [lock file descriptor, depth], for this process
_HELD: dict[str, list[int]] = {}


def _take(fd: int, folder: Path) -> None:
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = _read_holder(fd)
        os.close(fd)
        raise QPMError(f"Run folder {folder} is in use by {holder}.",
                       "Wait for it to finish, or use another --run-dir.") from None


def holding_lock(run: Callable[[Any], int]) -> Callable[[Any], int]:
    """Decorate a command's ``run(args)`` that writes into the existing run folder
    ``args.run_dir`` (evaluate, explain): it holds the folder's lock meanwhile."""

    @functools.wraps(run)
    def locked(args) -> int:
        folder = Path(args.run_dir)
        if not (folder / CONFIG).is_file():
            return run(args)  # not a run folder: the command says what is wrong with it
        with RunLock(folder, create=False):
            return run(args)

    return locked


def _read_holder(fd: int) -> str:
    # The holder writes its note right after taking the lock: give it a moment to appear.
    for _ in range(25):
        try:
            text = os.pread(fd, 1000, 0).decode("utf-8", "replace").strip()
        except OSError:
            text = ""
        if text:
            return _printable(text)
        time.sleep(0.02)
    return "another process"


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporaries a killed writer left (call with the lock held)."""
    removed = []
    for path in sorted(Path(folder).rglob(".*")):
        if is_temp_name(path.name) and path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


# --- content hashes and stage records ---------------------------------------------------------

_HASHES: dict[tuple, str] = {}


def file_hash(path: str | Path) -> str:
    """sha256 of a file's content (remembered per size, mtime and inode within a process)."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


@dataclass
class StageRecord:
    """What a finished stage was computed from and what it wrote.

    ``fields`` are the config values the stage depends on; ``inputs`` maps each upstream
    name (``data`` and the artifacts of the stages before it) to its sha256; ``output`` is
    the sha256 of ``artifact``.
    """

    stage: str
    artifact: str
    fields: dict[str, Any]
    inputs: dict[str, str]
    output: str
    seconds: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def record_path(folder: str | Path, stage: str) -> Path:
    return Path(folder) / RECORDS / f"{stage}.json"


def read_record(folder: str | Path, stage: str) -> tuple[StageRecord | None, str]:
    """(the stage's record, "") or (None, why there is no usable one)."""
    path = record_path(folder, stage)
    if not path.exists():
        return None, f"{RECORDS}/{stage}.json is missing"
    try:
        data = read_json(path)
        rec = StageRecord(**data)
    except (ArtifactError, TypeError) as exc:
        why = exc.problem if isinstance(exc, ArtifactError) else "it has unexpected fields"
        return None, f"{RECORDS}/{stage}.json is unusable ({why})"
    ok = (isinstance(rec.stage, str) and isinstance(rec.artifact, str)
          and isinstance(rec.fields, dict) and isinstance(rec.inputs, dict)
          and all(isinstance(v, str) for v in rec.inputs.values())
          and isinstance(rec.output, str) and isinstance(rec.extra, dict)
          and (rec.seconds is None or isinstance(rec.seconds, int | float)))
    if not ok or rec.stage != stage:
        return None, f"{RECORDS}/{stage}.json has values of the wrong type"
    return rec, ""


def write_record(folder: str | Path, record: StageRecord) -> Path:
    return write_json(record_path(folder, record.stage), asdict(record))


def artifact_mismatch(folder: str | Path, stage: str, artifact: str) -> str | None:
    """None when ``artifact`` is exactly what ``stage`` recorded, else why it is not."""
    rec, why = read_record(folder, stage)
    if rec is None:
        return why
    path = Path(folder) / artifact
    if rec.artifact != artifact or not path.is_file():
        return f"{artifact} is not the artifact {stage} recorded"
    if file_hash(path) != rec.output:
        return f"{artifact} changed after its stage finished (edited, or copied from another run)"
    return None


def check_model_file(folder: str | Path, model_type: str) -> None:
    """QPMError unless the model file is the one its stage recorded (evaluate, explain)."""
    name = model_file(model_type)
    why = artifact_mismatch(folder, model_type, name)
    if why is not None:
        raise QPMError(f"{Path(folder) / name} cannot be trusted: {why}.",
                       f"Re-run qpm train with this run's flags (--run-dir {folder}) to recompute "
                       "it.")


# --- the data fingerprint ---------------------------------------------------------------------


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
        shown = (f"'{_printable(a[first], 40)}' vs '{_printable(b[first], 40)}'"
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
