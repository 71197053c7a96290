"""Stage records: what a finished stage was computed from and what it wrote, by sha256.

A stage's record names the sha256 of the artifacts it was computed from and of the artifact it
wrote, so an artifact edited by hand, copied from another run or left by another writer is
found out and recomputed. The records are one file per stage, so an unreadable record costs
only its own stage.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from qpm.errors import QPMError
from qpm.io import ArtifactError, read_json, write_json
from qpm.run_folder.names import CONFIG, RECORDS, model_file

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


def imported_from(folder: str | Path, stage: str) -> str | None:
    """The checkpoint ``stage``'s artifact was imported from (qpm import-reference), or None."""
    rec, _ = read_record(folder, stage)
    return None if rec is None else rec.extra.get("imported_from")


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


def check_model_file(folder: str | Path, model_type: str, run_dir: str | Path | None = None
                     ) -> None:
    """The one trust check of every reader (evaluate, explain, predict, ``qpm.load``): QPMError
    unless the model file in ``folder`` (the run folder ``run_dir`` or one of its variants) is
    the file its stage recorded there, made with that folder's settings from the artifacts
    that are there now. A model and its record copied over from another variant, and a model
    without its record, are refused."""
    folder = Path(folder)
    run_dir = Path(run_dir) if run_dir is not None else folder
    name = model_file(model_type)
    why = artifact_mismatch(folder, model_type, name) or _made_elsewhere(folder, model_type,
                                                                         run_dir)
    if why is not None:
        raise QPMError(f"{folder / name} cannot be trusted: {why}.",
                       _recompute_advice(folder, model_type, run_dir))


def _made_elsewhere(folder: Path, stage: str, run_dir: Path) -> str | None:
    """Why ``stage``'s record does not belong in ``folder``, or None: its settings differ from
    the folder's own config.json (a variant's), or an artifact it was made from is not the
    one recorded here."""
    rec, _ = read_record(folder, stage)
    if rec is None:
        return None
    if folder != run_dir and (folder / CONFIG).is_file():
        try:
            config = read_json(folder / CONFIG)
        except ArtifactError as exc:
            return f"{CONFIG} next to it is unusable ({exc.problem})"
        if isinstance(config, dict):
            for key, value in rec.fields.items():
                if key in config and config[key] != value:
                    return (f"its record was made with {key} {value!r}, but this variant has "
                            f"{config[key]!r} (copied from another variant?)")
    made = {**_outputs(run_dir), **_outputs(folder)}  # the folder's own records first
    for artifact, digest in rec.inputs.items():
        if artifact in made and made[artifact] != digest:
            return (f"it was made from another {artifact} than the one recorded here "
                    "(copied from another variant or run?)")
    return None


def _outputs(folder: Path) -> dict[str, str]:
    """artifact -> sha256, as the readable records in ``folder`` name them."""
    out = {}
    for path in sorted((folder / RECORDS).glob("*.json")):
        rec, _ = read_record(folder, path.stem)
        if rec is not None:
            out[rec.artifact] = rec.output
    return out


def _recompute_advice(folder: Path, stage: str, run_dir: Path) -> str:
    source = imported_from(folder, stage)
    if source:
        return f"Import {source} again with qpm import-reference into a new --run-dir."
    if folder != run_dir:
        return (f"Recompute it with the qpm train command that made variant {folder.name} "
                f"(its settings are in {folder / CONFIG}) plus --run-dir {run_dir} --force "
                f"{stage}, or use another model with --variant.")
    return (f"Recompute it with this run's qpm train command plus --run-dir {run_dir} "
            f"--force {stage}.")
