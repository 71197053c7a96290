"""What in a folder belongs to qpm: whether a folder is a run folder, whether one may become
one, which paths in it are its artifacts, and that each of them is a plain file.

A run folder is the folder ``qpm train`` or ``qpm import-reference`` made: its config.json is
a JSON object with a run's fields. qpm writes into a folder only when it is such a run folder,
does not exist, or is empty (what an interrupted first start leaves, the lock file and qpm's
own temporaries, counts as empty); any other folder belongs to someone else and is refused,
so that ``--run-dir ~/Documents`` never replaces a file there. A command that writes a file
the user named (``--out``) asks :func:`artifact_owner` first: no run folder's artifact is
ever replaced by a command's output.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from qpm.errors import QPMError
from qpm.io import ArtifactError, is_temp_name, read_json
from qpm.run_folder.names import (
    ASSIGNMENT,
    CONFIG,
    DATA,
    DENSE,
    EXPLAIN,
    FEATURES,
    LOCK,
    METRICS,
    RECORDS,
    SIMILARITIES,
    SLDD_LAYER,
    TOKENS,
    VARIANTS,
    calibration_files,
)
from qpm.text import printable

# The files qpm keeps at the top of a run folder or a variant folder (besides its model files
# *.pt, epoch checkpoints *.ckpt and pictures *assignment.png), and its sub-folders.
RUN_FILES = (CONFIG, DATA, METRICS, DENSE, FEATURES, SIMILARITIES, ASSIGNMENT, SLDD_LAYER)
RUN_SUFFIXES = (".pt", ".ckpt")
RUN_DIRS = (RECORDS, VARIANTS, EXPLAIN, TOKENS)  # TOKENS: a frozen backbone's cache
CALIBRATION_PREFIX = calibration_files("")[0].split("-")[0]  # calibration-<type>.json/.npz
# Keys every config.json qpm ever wrote holds: what tells a run folder from a folder that
# happens to hold some other program's config.json.
CONFIG_MARKERS = ("dataset", "seed")
FIX_DIR = "Pass a new or empty folder with --run-dir, or a run folder qpm made."


def is_run_folder(folder: str | Path) -> bool:
    """Whether ``folder`` holds a run's config.json (qpm train or import-reference made it)
    and is no variant folder inside a run folder (those hold a config.json too)."""
    folder = Path(folder)
    return _has_run_config(folder) and not _is_variant(folder)


def _has_run_config(folder: Path) -> bool:
    path = folder / CONFIG
    if not path.is_file():
        return False
    try:
        data = read_json(path)
    except ArtifactError:
        return False
    return isinstance(data, dict) and all(k in data for k in CONFIG_MARKERS)


def _is_variant(folder: Path) -> bool:
    folder = Path(os.path.realpath(folder))
    return folder.parent.name == VARIANTS and _has_run_config(folder.parent.parent)


def check_run_dir(folder: str | Path, new: bool = False) -> None:
    """QPMError unless qpm may write the run folder ``folder``: it does not exist, is empty
    (but for qpm's own lock and temporaries), or is a run folder (``new``: must not be one)."""
    path = Path(folder)
    if not path.exists() and not path.is_symlink():
        return
    if not path.is_dir():
        raise QPMError(f"Run folder {printable(path)} is a file, not a folder.", FIX_DIR)
    if _is_variant(path):
        run = Path(os.path.realpath(path)).parent.parent
        raise QPMError(f"{printable(path)} is a variant folder of the run folder "
                       f"{printable(run)}, not a run folder.",
                       f"Pass --run-dir {printable(run)} (with --force STAGE to recompute).")
    if (path / LOCK).is_file() and (path / RECORDS).is_dir():  # a run folder, damaged?
        check_files(path)  # e.g. its config.json replaced by a folder: named as such
    if is_run_folder(path):
        if new:
            raise QPMError(f"{printable(path)} is already a run folder.",
                           "Pass a new folder with --run-dir.")
        return
    try:
        entries = sorted(os.listdir(path))
    except OSError as exc:
        raise QPMError(f"Run folder {printable(path)} cannot be read ({exc.strerror}).",
                       FIX_DIR) from None
    foreign = [e for e in entries if not _left_by_a_start(path, e)]
    if foreign:
        shown = ", ".join(printable(e) for e in foreign[:3]) + (", ..." if len(foreign) > 3
                                                               else "")
        raise QPMError(f"{printable(path)} is not a qpm run folder and not empty (it holds "
                       f"{shown}); qpm would replace files there.", FIX_DIR)


def _left_by_a_start(folder: Path, name: str) -> bool:
    """What a first start killed before it wrote config.json may have left: its temporaries,
    the lock file (empty, or naming its holder) and, from versions that wrote it first, the
    data fingerprint."""
    if is_temp_name(name):
        return True
    if name == DATA:
        try:
            data = read_json(folder / name)
        except ArtifactError:
            return False
        return isinstance(data, dict) and {"files_sha256", "class_names"} <= set(data)
    if name != LOCK:
        return False
    try:
        st = os.lstat(folder / name)
        if not stat.S_ISREG(st.st_mode) or st.st_size > 4096:
            return False
        with open(folder / name, "rb") as fh:
            text = fh.read(8)
    except OSError:
        return False
    return text == b"" or text.startswith(b"pid ")


def artifact_owner(path: str | Path) -> str | None:
    """"the run folder R's file X" when ``path`` (or where a link in it leads) is a file qpm
    keeps in a run folder; None otherwise (a new file of the user's own is fine anywhere)."""
    path = Path(path)
    real = Path(os.path.realpath(path.parent)) / path.name
    if path.is_symlink():
        real = Path(os.path.realpath(path))
    for depth, folder in enumerate(real.parents):
        if depth > 4:  # the deepest file qpm names: variants/V/stages/S.json, explain/...
            break
        if is_run_folder(folder):
            rel = real.relative_to(folder)
            if _owned(rel):
                return f"a file of the run folder {printable(folder)} ({printable(rel)})"
            return None
    return None


def _owned(rel: Path) -> bool:
    first = rel.parts[0]
    if first in RUN_DIRS or first == LOCK:
        return True
    name = rel.name
    return len(rel.parts) == 1 and (name in RUN_FILES or name.endswith(RUN_SUFFIXES)
                                    or name.endswith("assignment.png")
                                    or name.startswith(CALIBRATION_PREFIX))


def check_files(run_dir: str | Path) -> None:
    """QPMError when a file qpm keeps in the run folder (or a variant's) is a folder or
    anything else that is not a plain file: it could be neither read nor replaced."""
    run_dir = Path(run_dir)
    folders = [run_dir]
    variants = run_dir / VARIANTS
    _plain(variants, folder=True)
    if variants.is_dir():
        folders += sorted(p for p in variants.iterdir() if p.is_dir())
    for folder in folders:
        _plain(folder / RECORDS, folder=True)
        names = list(RUN_FILES)
        try:
            names += [e for e in os.listdir(folder) if e.endswith(RUN_SUFFIXES)]
            if (folder / RECORDS).is_dir():
                names += [f"{RECORDS}/{e}" for e in os.listdir(folder / RECORDS)
                          if e.endswith(".json")]
        except OSError:
            continue
        for name in names:
            _plain(folder / name)


def _plain(path: Path, folder: bool = False) -> None:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise QPMError(f"{printable(path)} cannot be read ({exc.strerror}).",
                       "Make the run folder readable, or use another --run-dir.") from None
    if folder and not stat.S_ISDIR(mode):
        raise QPMError(f"{printable(path)} is a file, but qpm keeps a folder there.",
                       f"Remove or rename {printable(path)}; qpm recomputes what it held.")
    if not folder and not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file"
        raise QPMError(f"{printable(path)} is {kind}, but qpm keeps a file there.",
                       f"Remove or rename {printable(path)}; qpm recomputes what it held.")
