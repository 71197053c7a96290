"""Builders of malformed files for the reliability tests: raw .npy members and .npz archives
(crafted headers, zip bombs) and a PNG that declares a huge image but holds no pixels."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np


def npy_bytes(arr: np.ndarray) -> bytes:
    """An array as the bytes of a .npy file (object arrays included: pickled)."""
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, allow_pickle=True)
    return buf.getvalue()


def header_only(shape: tuple[int, ...], descr: str = "<f8") -> bytes:
    """A .npy header declaring ``shape`` with no data after it."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False,
                                               "shape": shape})
    return buf.getvalue()


def npz(path: Path, members: dict[str, bytes], deflate: bool = False) -> Path:
    """An .npz from raw members (``name`` -> bytes of ``name.npy``)."""
    mode = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", compression=mode) as zf:
        for name, data in members.items():
            zf.writestr(f"{name}.npy", data)
    return path


def png_header_only(width: int, height: int) -> bytes:
    """A PNG declaring width x height pixels and holding none (a decompression bomb's head)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")
