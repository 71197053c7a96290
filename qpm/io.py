"""Files: the one atomic writer, strict JSON and guarded ``.npz`` reading (torch-free).

Every file qpm writes goes through :func:`atomic_write`: a uniquely named temporary file in
the same folder (``.qpm-NAME.<random>.tmp``, created with ``O_EXCL``: never an existing file
or a link), flushed and fsynced, given the permissions the umask allows, then
``os.replace``-d over the target. A kill leaves the old file or the new one, never half of
one, and at most a temporary that :func:`is_temp_name` recognises by qpm's own prefix. A
write the machine refuses (a full disk, ``ulimit -f``, permissions, a folder where the file
should be) is one :class:`WriteError` naming the file, and the old file stays.

JSON is strict both ways: NaN and Infinity are neither written nor accepted.

:func:`read_npz` reads only the arrays it is asked for, and only after checking each one's
``.npy`` header: declared shape and dtype (no object, complex or structured arrays), that the
zip member holds exactly that many bytes, and that everything fits in the memory available.
Nothing is allocated before those checks pass, so a crafted header or a zip bomb costs nothing.
A stored (uncompressed) member is read straight into its array and its CRC-32 checked;
:func:`save_npz` writes what ``numpy.savez`` writes, without numpy's intermediate copies.
"""

from __future__ import annotations

import math
import os
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from qpm.errors import QPMError, os_error
from qpm.memory import require_memory
from qpm.npz import Header, is_plain, read_data, read_header, read_stored, write_npz

TEMP_PREFIX = ".qpm-"  # every temporary file qpm makes starts with it (nothing else does)
TEMP_SUFFIX = ".tmp"


class ArtifactError(QPMError):
    """A file exists but cannot be used (truncated, corrupt, wrong content)."""


class WriteError(ArtifactError, OSError):
    """A file could not be written (still an OSError for callers that catch those)."""


# --- writing ----------------------------------------------------------------------------------


def _umask() -> int:
    # os.umask can only be read by setting it; /proc avoids that race where it exists.
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def is_temp_name(name: str) -> bool:
    """Whether ``name`` is a temporary file of :func:`atomic_write` (``.qpm-NAME.xxxx.tmp``)."""
    return name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX)


def atomic_write(path: str | Path, write: Callable[[Any], None], mode: str = "wb") -> Path:
    """Write ``path`` through ``write(file)`` on a synced temporary file, then os.replace.
    A failure the machine causes is a :class:`WriteError` naming ``path``; the old file (if
    any) is kept and the temporary removed."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{path.name}.", suffix=TEMP_SUFFIX,
                                   dir=path.parent)
    except OSError as exc:
        raise _write_error(path, exc) from None
    seen: list[OSError] = []  # what the file refused, when a library re-raises it as another error
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; files should follow the umask
        with os.fdopen(fd, mode) as fh:
            write(_Watched(fh, seen))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        cause = exc if isinstance(exc, OSError) else (seen[0] if seen else None)
        if cause is not None and not isinstance(exc, QPMError | KeyboardInterrupt):
            raise _write_error(path, cause) from None
        raise
    _sync_folder(path.parent)
    return path


class _Watched:
    """A file whose failed writes are remembered: torch.save and matplotlib turn an OSError
    into their own exception types, and the cause must still reach the user."""

    def __init__(self, fh, seen: list[OSError]) -> None:
        self._fh, self._seen = fh, seen

    def write(self, data):
        try:
            return self._fh.write(data)
        except OSError as exc:
            self._seen.append(exc)
            raise

    def __getattr__(self, name: str):
        return getattr(self._fh, name)


def _write_error(path: Path, exc: OSError) -> WriteError:
    known = os_error(exc, path)
    if known is not None:
        return WriteError(known.problem, known.fix)
    return WriteError(f"Cannot write {path} ({exc.strerror or exc}).",
                      "Check the folder and re-run; finished files are kept.")


def _sync_folder(folder: Path) -> None:
    # The rename itself is durable only once the folder is synced (not possible everywhere).
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda fh: fh.write(text), mode="w")


def dumps_json(obj: Any) -> str:
    """Strict JSON text: a NaN or infinite number is a ValueError (a bug upstream), never
    a file other tools cannot read."""
    import json  # here, not at the top: most commands read and write no JSON

    try:
        return json.dumps(obj, indent=2, allow_nan=False) + "\n"
    except ValueError:
        where = _first_nonfinite(obj)
        raise ValueError(f"refusing to write a non-finite number to JSON at {where}") from None


def _first_nonfinite(obj: Any, where: str = "$") -> str | None:
    if isinstance(obj, float) and not math.isfinite(obj):
        return where
    items = obj.items() if isinstance(obj, dict) else (
        enumerate(obj) if isinstance(obj, list | tuple) else ())
    for key, value in items:
        found = _first_nonfinite(value, f"{where}[{key!r}]")
        if found:
            return found
    return None


def write_json(path: str | Path, obj: Any) -> Path:
    return write_text(path, dumps_json(obj))


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not allowed in qpm's JSON files")


def read_json(path: str | Path, fix: str | None = None, what: str = "") -> Any:
    """A strict JSON file (no NaN/Infinity); any problem is an :class:`ArtifactError`."""
    path = Path(path)
    name = f"{what} file {path}" if what else str(path)
    fix = fix or f"Delete {path} and re-run; it will be recomputed."
    check_input_file(path, f"{what} file" if what else "File", fix)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{name} cannot be read ({exc}).", fix) from None
    import json

    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise ArtifactError(f"{name} is not valid JSON ({exc}).", fix) from None


def save_npz(path: str | Path, **arrays: np.ndarray) -> Path:
    """An uncompressed .npz (what ``numpy.savez`` writes), atomically."""
    return atomic_write(path, lambda fh: write_npz(fh, arrays))


# --- output paths -----------------------------------------------------------------------------


def _probe_folder(path: Path, flag: str) -> None:
    """QPMError unless a file can be created in the nearest existing folder above ``path``."""
    folder = path
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise QPMError(f"{flag} {path} cannot be written: {folder} is a file, not a folder.",
                       f"Choose another {flag}.")
    try:
        fd, probe = tempfile.mkstemp(prefix=".qpm-probe.", suffix=TEMP_SUFFIX, dir=folder)
    except OSError as exc:
        raise QPMError(f"{flag} {path} cannot be written ({exc.strerror} in {folder}).",
                       f"Choose a writable {flag}.") from None
    os.close(fd)
    os.unlink(probe)


def check_output_file(path: str | Path, flag: str, inputs: tuple | list = (),
                      suffixes: tuple[str, ...] = (),
                      owned: Callable[[Path], str | None] | None = None) -> None:
    """Before the work: QPMError unless ``path`` can be written as a new or replaced file
    without destroying anything: not one of the ``inputs`` (nor a link to one), not a file
    that ``owned(path)`` claims (a run folder's artifact: it says whose), and, when it exists,
    a file of the kind the command writes (its name ends with one of ``suffixes``), so that
    ``--out photos/*.jpg`` cannot turn a photo into a CSV file."""
    from qpm.text import printable

    path = Path(path)
    shown = printable(path)
    if path.is_dir():
        raise QPMError(f"{flag} {shown} is a folder.", f"Give a file name for {flag}.")
    for src in inputs:
        if src is not None and _same_file(Path(src), path):
            raise QPMError(f"{flag} {shown} is the input file {printable(src)}; writing it would "
                           "destroy the input.", f"Give another file name for {flag}.")
    whose = owned(path) if owned is not None else None
    if whose is not None:
        raise QPMError(f"{flag} {shown} is {whose}; writing it would destroy it.",
                       f"Write {flag} outside the run folder, or under a name of your own.")
    if suffixes and (path.exists() or path.is_symlink()) and not (
            path.is_file() and not path.is_symlink()
            and path.name.lower().endswith(tuple(s.lower() for s in suffixes))):
        kind = "a link" if path.is_symlink() else "a file that is not " + " or ".join(suffixes)
        raise QPMError(f"{flag} {shown} exists and is {kind}; qpm replaces only its own "
                       f"kind of output file.", f"Give a new file name ending in "
                       f"{suffixes[0]} for {flag}.")
    _probe_folder(path.parent, flag)


def check_input_file(path: str | Path, what: str, fix: str) -> Path:
    """QPMError unless ``path`` is a regular file (a named pipe or a device would block or
    never end; a folder is not a file). Returns it as a Path."""
    import stat

    from qpm.text import printable

    path = Path(path)
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        why = "does not exist" if isinstance(exc, FileNotFoundError) else (
            f"cannot be read ({exc.strerror})")
        raise ArtifactError(f"{what} {printable(path)} {why}.", fix) from None
    if stat.S_ISDIR(mode):
        raise ArtifactError(f"{what} {printable(path)} is a folder, not a file.", fix)
    if not stat.S_ISREG(mode):
        kind = "a named pipe (FIFO)" if stat.S_ISFIFO(mode) else (
            "a socket" if stat.S_ISSOCK(mode) else "a device")
        raise ArtifactError(f"{what} {printable(path)} is {kind}, not a regular file.", fix)
    return path


def check_output_folder(path: str | Path, flag: str) -> None:
    """Before the work: QPMError unless ``path`` is, or can be made, a writable folder."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise QPMError(f"{flag} {path} is a file, not a folder.", f"Give a folder for {flag}.")
    _probe_folder(path, flag)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


# --- guarded .npz reading ---------------------------------------------------------------------


# dtype kinds an .npz from qpm may hold: bool, integers, floats, unicode and bytes strings
SAFE_KINDS = "biufUS"
KIND_NAMES = {"b": "bool", "i": "integer", "u": "integer", "f": "float", "U": "string",
              "S": "string", "c": "complex", "O": "object", "V": "structured"}


def _check_kind(key: str, header: Header, path: Path, fix: str, what: str) -> None:
    kind = header.dtype.kind
    if kind not in SAFE_KINDS or header.dtype.hasobject or header.dtype.fields:
        name = KIND_NAMES.get(kind, f"dtype {header.dtype}")
        note = " (loading it would need pickle, which is refused)" if kind == "O" else ""
        article = "an" if name[0] in "aeiou" else "a"
        raise QPMError(f"{what} file {path}: array {key!r} is {article} {name} array{note}; only "
                       "real numbers and strings are accepted.", fix)


def npz_headers(path: str | Path, what: str = "Input", fix: str = "") -> dict[str, Header]:
    """Every array's declared header, reading no data (QPMError for an unusable file)."""
    path = _check_npz_path(path, what, fix)
    return _with_zip(path, what, fix, lambda zf: _headers(zf, path, what, fix))


def read_npz(path: str | Path, keys: tuple[str, ...], *, what: str = "Input", fix: str = "",
             required: tuple[str, ...] = (),
             check: Callable[[dict[str, Header]], None] | None = None,
             factor: float = 1.0) -> dict[str, np.ndarray]:
    """The arrays ``keys`` of an .npz (others are never read), after checking their headers.

    ``required`` keys must exist; ``check(headers)`` may refuse declared shapes before any
    allocation; the file is refused when ``factor`` times its arrays' bytes exceed the memory
    available. Every problem is a QPMError (an :class:`ArtifactError`) saying what and ``fix``.
    """
    path = _check_npz_path(path, what, fix)

    def load(zf: zipfile.ZipFile) -> dict[str, np.ndarray]:
        headers = _headers(zf, path, what, fix, keys)
        missing = [k for k in required if k not in headers]
        if missing:
            raise ArtifactError(f"{what} file {path} has no array {', '.join(map(repr, missing))}.",
                                fix)
        if check is not None:
            check(headers)
        need = int(factor * sum(h.nbytes for h in headers.values()))
        biggest = max(headers, key=lambda k: headers[k].nbytes, default=None)
        if biggest is not None:
            h = headers[biggest]
            require_memory(need, f"{what} file {path} (array {biggest!r} declares shape "
                           f"{h.shape} {h.dtype})", fix or "Use a smaller input.")
        out = {}
        for key, header in headers.items():
            info = zf.getinfo(f"{key}.npy")
            with zf.open(info) as fh:  # zipfile checks the member's local header here
                read_header(fh, key)
                if not is_plain(info):  # compressed: read through zipfile
                    out[key] = read_data(fh, header)
                    continue
            # Stored: read from the archive file itself, once the member is closed again.
            out[key] = read_stored(zf, info, header)
        return out

    return _with_zip(path, what, fix, load)


def _check_npz_path(path: str | Path, what: str, fix: str) -> Path:
    path = Path(path)
    if path.is_dir():
        raise ArtifactError(f"{what} path {path} is a folder, not an .npz file.", fix)
    check_input_file(path, f"{what} file", fix)
    try:
        with open(path, "rb") as fh:
            magic = fh.read(6)
    except OSError as exc:
        raise ArtifactError(f"{what} file {path} cannot be read ({exc.strerror}).", fix) from None
    if not magic.startswith(b"PK"):
        kind = "a single .npy array" if magic.startswith(b"\x93NUMPY") else "not a zip archive"
        raise ArtifactError(f"{what} file {path} is not an .npz file ({kind}).", fix)
    return path


def _with_zip(path: Path, what: str, fix: str, body: Callable[[zipfile.ZipFile], Any]) -> Any:
    try:
        with zipfile.ZipFile(path) as zf:
            return body(zf)
    except QPMError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError, SyntaxError,
            TypeError, OverflowError, NotImplementedError, RuntimeError) as exc:
        raise ArtifactError(f"{what} file {path} is corrupt or truncated "
                            f"({type(exc).__name__}: {exc}).", fix) from None


def _headers(zf: zipfile.ZipFile, path: Path, what: str, fix: str,
             keys: tuple[str, ...] | None = None) -> dict[str, Header]:
    out = {}
    for info in zf.infolist():
        key = info.filename[:-4]
        if not info.filename.endswith(".npy") or info.is_dir() or (keys and key not in keys):
            continue
        with zf.open(info) as fh:
            header = read_header(fh, key)
        _check_kind(key, header, path, fix, what)
        if info.file_size != header.offset + header.nbytes:
            raise ArtifactError(
                f"{what} file {path} is corrupt: array {key!r} declares {header.nbytes} bytes "
                f"of data but its zip member holds {info.file_size - header.offset}.", fix)
        out[key] = header
    return out
