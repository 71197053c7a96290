"""What the hostile suite shares: the run of one bad command and the files it is given.

Every case runs the real command line (``qpm.cli.main``) and must end with exit code 2, ONE
line on stderr that starts ``qpm COMMAND: error:`` and names the problem, no traceback, and
no change to anything that existed before (the trained run folder, the input files).
"""

from __future__ import annotations

import hashlib
import io as pyio
import shutil
import struct
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass
class Env:
    """Paths a case may use. ``run`` is the shared trained run (never written by a passing
    case); ``tmp`` is the case's own folder; ``inputs`` holds the good input files."""

    run: Path
    data: Path
    inputs: Path
    tmp: Path
    locked: Path

    @property
    def sims(self) -> Path:
        return self.inputs / "sims.npz"

    @property
    def feats(self) -> Path:
        return self.inputs / "features.npz"

    def own_run(self) -> Path:
        """A copy of the trained run that this case may edit."""
        dst = self.tmp / "run"
        if not dst.exists():
            shutil.copytree(self.run, dst)
        return dst


@dataclass
class Case:
    id: str
    category: str
    argv: Callable[[Env], list[str]]
    words: str  # must appear in the error line
    memory: int | None = None  # bytes qpm.io may see as available (deterministic limits)
    lines: str = "one"  # "one": stderr is the error line alone; "last": progress lines first
    shown: str | None = None  # text stdout must show (results printed before a failed write)
    patch: Callable | None = field(default=None, repr=False)  # patch(monkeypatch, env)


def snapshot(*folders: Path) -> dict[str, str]:
    """sha256 of every file under ``folders`` (the OS lock file aside)."""
    out = {}
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and path.name != ".lock":
                out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


# --- bad .npz files ---------------------------------------------------------------------------


def npy_bytes(arr: np.ndarray) -> bytes:
    buf = pyio.BytesIO()
    np.lib.format.write_array(buf, arr, allow_pickle=True)
    return buf.getvalue()


def header_only(shape: tuple[int, ...], descr: str = "<f8") -> bytes:
    buf = pyio.BytesIO()
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


def sims(env: Env, name: str = "bad.npz", **arrays) -> str:
    """A SIMS.npz like the good one with some arrays replaced (raw bytes or arrays)."""
    with np.load(env.sims, allow_pickle=False) as good:
        base = {k: good[k] for k in good.files}
    base.update(arrays)
    members = {k: v if isinstance(v, bytes) else npy_bytes(np.asarray(v))
               for k, v in base.items()}
    return str(npz(env.tmp / name, members))


def feats(env: Env, name: str = "feats.npz", **arrays) -> str:
    with np.load(env.feats, allow_pickle=False) as good:
        base = {k: good[k] for k in good.files}
    base.update(arrays)
    members = {k: v if isinstance(v, bytes) else npy_bytes(np.asarray(v))
               for k, v in base.items()}
    return str(npz(env.tmp / name, members, deflate=True))


def zeros_bomb(env: Env, shape: tuple[int, ...]) -> str:
    """A SIMS.npz whose A is a deflated block of zeros: tiny on disk, large in memory."""
    return str(npz(env.tmp / "bomb.npz", {"A": npy_bytes(np.zeros(shape)),
                                          "format_version": npy_bytes(np.array(1))}, True))


# --- bad images and datasets ------------------------------------------------------------------


def png_header_only(width: int, height: int) -> bytes:
    """A PNG declaring width x height pixels and holding none (a decompression bomb's head)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def dataset_with(env: Env, edit: Callable[[Path], None]) -> str:
    """A copy of the tiny image folder, changed by ``edit(root)``."""
    root = env.tmp / "data"
    shutil.copytree(env.data, root)
    edit(root)
    return str(root)


def replace_first_train_image(data: bytes | None = None, image: Image.Image | None = None,
                              suffix: str = ".png") -> Callable[[Path], None]:
    def edit(root: Path) -> None:
        first = sorted((root / "train").rglob("*.png"))[0]
        first.unlink()
        target = first.with_suffix(suffix)
        if image is not None:
            image.save(target)
        else:
            target.write_bytes(data)

    return edit


def one_class(root: Path) -> None:
    for split in ("train", "test"):
        for folder in sorted((root / split).iterdir())[1:]:
            shutil.rmtree(folder)
