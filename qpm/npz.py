"""The .npy-in-.npz member format for :mod:`qpm.io`: headers, and array data read and
written without intermediate copies (numpy and zipfile copy every chunk on the way).

:func:`write_npz` writes exactly what ``numpy.savez`` writes. :func:`read_stored` reads a
stored (uncompressed) member straight into its array and checks its CRC-32 as zipfile does;
the checks that make reading safe (declared sizes, memory) stay in :func:`qpm.io.read_npz`.
"""

from __future__ import annotations

import io
import math
import os
import struct
import zipfile
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np


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


_CHUNK = 1 << 22  # bytes written between two writeback requests


def write_npz(fh, arrays: dict[str, Any]) -> None:
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


def read_header(fh, name: str) -> Header:
    """The .npy header at ``fh``'s position (ValueError if unreadable); ``fh`` left at the data."""
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


def read_data(fh, header: Header) -> np.ndarray:
    """The data after a header, read through ``fh`` (any member: zipfile decompresses it)."""
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


def is_plain(info: zipfile.ZipInfo) -> bool:
    """A stored (uncompressed, unencrypted) member: its data can be read straight from the file."""
    return (info.compress_type == zipfile.ZIP_STORED and not info.flag_bits & 0x1
            and info.compress_size == info.file_size)


def read_stored(zf: zipfile.ZipFile, info: zipfile.ZipInfo, header: Header) -> np.ndarray:
    """A stored member's array read from the archive file directly into the array (zipfile
    would copy every chunk twice), its CRC-32 checked as zipfile does. The declared size was
    checked against the member's size (:func:`qpm.io._headers`), the local header by ``zf.open``."""
    arr = np.empty(header.count, dtype=header.dtype)
    view = memoryview(arr.view(np.uint8).reshape(-1))
    fp = zf.fp
    fp.seek(info.header_offset)
    head = fp.read(zipfile.sizeFileHeader)
    if len(head) != zipfile.sizeFileHeader:  # zf.open read it a moment ago: the file changed
        raise zipfile.BadZipFile(f"truncated local header of {info.filename!r}")
    local = struct.unpack(zipfile.structFileHeader, head)
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
