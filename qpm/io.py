"""Files: the one atomic writer, strict JSON and guarded ``.npz`` reading (torch-free).

Every file qpm writes goes through :func:`atomic_write`: a uniquely named temporary file in
the same folder (``.NAME.<random>.tmp``), flushed and fsynced, given the permissions the
umask allows, then ``os.replace``-d over the target. A kill leaves the old file or the new
one, never half of one, and at most a temporary that :func:`is_temp_name` recognises.

JSON is strict both ways: NaN and Infinity are neither written nor accepted.

:func:`read_npz` reads only the arrays it is asked for, and only after checking each one's
``.npy`` header: declared shape and dtype (no object, complex or structured arrays), that the
zip member holds exactly that many bytes, and that everything fits in the memory available.
Nothing is allocated before those checks pass, so a crafted header or a zip bomb costs nothing.
A stored (uncompressed) member is read straight into its array and its CRC-32 checked;
:func:`save_npz` writes what ``numpy.savez`` writes, without numpy's intermediate copies.
"""

from __future__ import annotations

import io
import math
import os
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qpm.errors import QPMError

TEMP_SUFFIX = ".tmp"


class ArtifactError(QPMError):
    """A file exists but cannot be used (truncated, corrupt, wrong content)."""


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
    """Whether ``name`` is a temporary file of :func:`atomic_write` (``.NAME.xxxx.tmp``)."""
    return name.startswith(".") and name.endswith(TEMP_SUFFIX) and name.count(".") >= 3


def atomic_write(path: str | Path, write: Callable[[Any], None], mode: str = "wb") -> Path:
    """Write ``path`` through ``write(file)`` on a synced temporary file, then os.replace."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; files should follow the umask
        with os.fdopen(fd, mode) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _sync_folder(path.parent)
    return path


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
    return atomic_write(path, lambda fh: _write_npz(fh, arrays))


_CHUNK = 1 << 22  # bytes written between two writeback requests


def _write_npz(fh, arrays: dict[str, Any]) -> None:
    """``numpy.savez(fh, **arrays)``, minus a copy: a contiguous array's bytes go straight
    from the array to the zip member (numpy copies them in 16 MiB chunks first). Every
    ``_CHUNK`` bytes the kernel is asked to start writing them to disk, so the writer's
    final fsync finds little left to wait for."""
    with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for key, value in arrays.items():
            arr = np.asanyarray(value)
            with zf.open(f"{key}.npy", "w", force_zip64=True) as member:
                head = _npy_header(arr)
                if head is None:
                    np.lib.format.write_array(member, arr, allow_pickle=False)
                    continue
                member.write(head)
                data = arr if arr.flags.c_contiguous else arr.T  # Fortran order: header says so
                data = data.reshape(-1).view(np.uint8)
                for start in range(0, data.size, _CHUNK):
                    member.write(data[start:start + _CHUNK])
                    if data.size > _CHUNK:
                        _start_writeback(fh)


def _start_writeback(fh) -> None:
    """Start writing ``fh``'s data to disk now, without waiting (Linux queues a file's dirty
    pages for writeback on POSIX_FADV_DONTNEED); a no-op where that is not available."""
    try:
        fh.flush()
        os.posix_fadvise(fh.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    except (AttributeError, OSError, ValueError):  # no fileno (BytesIO), no posix_fadvise
        pass


def _npy_header(arr: np.ndarray) -> bytes | None:
    """The .npy header ``numpy.lib.format.write_array`` gives ``arr``, when its data can be
    written as its raw bytes (contiguous, a plain numeric or string dtype); else None."""
    simple = arr.dtype.kind in "biufcUS" and arr.dtype.fields is None
    contiguous = arr.flags.c_contiguous or arr.flags.f_contiguous
    if not (simple and contiguous and arr.dtype.itemsize > 0 and type(arr) is np.ndarray):
        return None
    buf = io.BytesIO()
    try:
        np.lib.format.write_array_header_1_0(buf, np.lib.format.header_data_from_array_1_0(arr))
    except ValueError:  # a header too long for format 1.0: numpy picks the version
        return None
    return buf.getvalue()


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


def check_output_file(path: str | Path, flag: str, inputs: tuple = ()) -> None:
    """Before the work: QPMError unless ``path`` can be written as a new or replaced file
    that is none of the ``inputs`` (writing over an input would destroy it)."""
    path = Path(path)
    if path.is_dir():
        raise QPMError(f"{flag} {path} is a folder.", f"Give a file name for {flag}.")
    for src in inputs:
        if src is not None and _same_file(Path(src), path):
            raise QPMError(f"{flag} {path} is the input file {src}; writing it would destroy "
                           "the input.", f"Give another file name for {flag}.")
    _probe_folder(path.parent, flag)


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


# --- memory -----------------------------------------------------------------------------------


def available_memory() -> int | None:
    """Bytes this process can still allocate (MemAvailable, or a cgroup limit), or None."""
    limits = []
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    limits.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        try:
            limits.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            pass
    try:
        raw = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
        if raw != "max":
            limits.append(int(raw) - used)
    except (OSError, ValueError):
        pass
    return min(limits) if limits else None


def gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:.1f} GiB" if nbytes >= 2**28 else f"{nbytes / 2**20:.1f} MiB"


def require_memory(nbytes: int, what: str, fix: str) -> None:
    """QPMError when ``nbytes`` exceed the memory available now (``what`` says for what)."""
    free = available_memory()
    if free is not None and nbytes > free:
        raise QPMError(f"{what} needs {gib(nbytes)} of memory, but only {gib(free)} "
                       "are available.", fix)


# --- guarded .npz reading ---------------------------------------------------------------------


@dataclass(frozen=True)
class Header:
    """What a member's .npy header declares."""

    shape: tuple[int, ...]
    dtype: np.dtype
    fortran: bool
    offset: int  # bytes of magic + header before the data

    @property
    def count(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.count * self.dtype.itemsize


# dtype kinds an .npz from qpm may hold: bool, integers, floats, unicode and bytes strings
SAFE_KINDS = "biufUS"
KIND_NAMES = {"b": "bool", "i": "integer", "u": "integer", "f": "float", "U": "string",
              "S": "string", "c": "complex", "O": "object", "V": "structured"}


def _read_header(fh, name: str) -> Header:
    try:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    except Exception as exc:  # noqa: BLE001 - numpy's header parser raises many kinds
        raise ValueError(f"array {name!r} has an unreadable .npy header ({exc})") from None
    if any(not isinstance(s, int) or s < 0 for s in shape):
        raise ValueError(f"bad shape {shape} in {name!r}")
    return Header(tuple(shape), np.dtype(dtype), bool(fortran), fh.tell())


def _check_kind(key: str, header: Header, path: Path, fix: str, what: str) -> None:
    kind = header.dtype.kind
    if kind not in SAFE_KINDS or header.dtype.hasobject or header.dtype.fields:
        name = KIND_NAMES.get(kind, f"dtype {header.dtype}")
        note = " (loading it would need pickle, which is refused)" if kind == "O" else ""
        article = "an" if name[0] in "aeiou" else "a"
        raise QPMError(f"{what} file {path}: array {key!r} is {article} {name} array{note}; only "
                       "real numbers and strings are accepted.", fix)


def _read_data(fh, header: Header) -> np.ndarray:
    arr = np.empty(header.count, dtype=header.dtype)
    view = memoryview(arr.view(np.uint8).reshape(-1))
    done, chunk = 0, 1 << 24
    while done < header.nbytes:
        got = fh.readinto(view[done:done + chunk])
        if not got:
            raise EOFError(f"the data ends after {done} of {header.nbytes} bytes")
        done += got
    if fh.read(1):  # reading to the end also makes zipfile check the CRC
        raise ValueError("there are bytes after the declared data")
    return arr.reshape(header.shape, order="F" if header.fortran else "C")


def _is_plain(info: zipfile.ZipInfo) -> bool:
    """A stored (uncompressed, unencrypted) member: its data can be read straight from the file."""
    return (info.compress_type == zipfile.ZIP_STORED and not info.flag_bits & 0x1
            and info.compress_size == info.file_size)


def _read_stored(zf: zipfile.ZipFile, info: zipfile.ZipInfo, header: Header) -> np.ndarray:
    """A stored member's array read from the archive file directly into the array (zipfile
    would copy every chunk twice), its CRC-32 checked as zipfile does. The declared size was
    checked against the member's size (:func:`_headers`), the local header by ``zf.open``."""
    arr = np.empty(header.count, dtype=header.dtype)
    view = memoryview(arr.view(np.uint8).reshape(-1))
    fp = zf.fp
    fp.seek(info.header_offset)
    local = struct.unpack(zipfile.structFileHeader, fp.read(zipfile.sizeFileHeader))
    fp.seek(info.header_offset + zipfile.sizeFileHeader + local[-2] + local[-1])
    crc = zlib.crc32(fp.read(header.offset))
    done = 0
    while done < header.nbytes:
        got = fp.readinto(view[done:])
        if not got:
            raise EOFError(f"the data ends after {done} of {header.nbytes} bytes")
        done += got
    if zlib.crc32(view, crc) != info.CRC:
        raise zipfile.BadZipFile(f"bad CRC-32 for {info.filename!r}")
    return arr.reshape(header.shape, order="F" if header.fortran else "C")


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
                _read_header(fh, key)
                arr = None if _is_plain(info) else _read_data(fh, header)
            out[key] = _read_stored(zf, info, header) if arr is None else arr
        return out

    return _with_zip(path, what, fix, load)


def _check_npz_path(path: str | Path, what: str, fix: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"{what} file {path} does not exist.", fix)
    if path.is_dir():
        raise ArtifactError(f"{what} path {path} is a folder, not an .npz file.", fix)
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
            header = _read_header(fh, key)
        _check_kind(key, header, path, fix, what)
        if info.file_size != header.offset + header.nbytes:
            raise ArtifactError(
                f"{what} file {path} is corrupt: array {key!r} declares {header.nbytes} bytes "
                f"of data but its zip member holds {info.file_size - header.offset}.", fix)
        out[key] = header
    return out
