"""One writer per run folder: an OS lock held for the whole command, naming its holder.

The lock file is opened without following a link (``O_NOFOLLOW``) and must be a plain file
of its own (one link), so a ``.lock`` planted as a link to another file is refused, never
truncated. :func:`claim` is how a command that creates or fills a run folder starts: it checks
that the folder may be written (:func:`~qpm.run_folder.ownership.check_run_dir`), takes the
lock, and checks again under the lock, so of two commands making the same new folder one is
refused.
"""

from __future__ import annotations

import errno
import functools
import os
import socket
import stat
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qpm.errors import QPMError
from qpm.io import is_temp_name
from qpm.run_folder.names import CONFIG, EXPLAIN, LOCK, RECORDS, TOKENS, VARIANTS
from qpm.run_folder.ownership import check_run_dir
from qpm.text import printable, shorten


def _shown(text: str, limit: int = 300) -> str:
    # Names shown to another user: no control characters, bounded length.
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
                f"({_shown(self.command)}, since {since})")
        try:  # the note only helps whoever is refused: the lock holds without it
            os.ftruncate(fd, 0)
            os.pwrite(fd, note.encode("utf-8", "replace"), 0)
        except OSError:
            pass
        _HELD[key] = [fd, 1]
        self._key = key
        return self

    def _open(self) -> int | None:
        path = self.folder / LOCK
        try:
            if self.create:
                self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
                         | os.O_NONBLOCK, 0o666)
        except OSError as exc:
            if exc.errno == errno.ELOOP or path.is_symlink():
                raise _not_a_lock(path, "a link") from None
            if not self.create:
                return None  # e.g. read-only: nobody can write it, the command reports later
            what = "is a file" if self.folder.is_file() else f"cannot be written ({exc.strerror})"
            raise QPMError(f"Run folder {self.folder} {what}.",
                           "Pass a writable folder with --run-dir.") from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            os.close(fd)
            raise _not_a_lock(path, "not a plain file" if not stat.S_ISREG(st.st_mode)
                              else "a second name of another file (a hard link)")
        return fd

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
        # `with claim(...)`: the lock claim took is held once, and released on exit
        return self if self._key is not None else self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


# realpath of a locked folder -> [lock file descriptor, depth], for this process
_HELD: dict[str, list[int]] = {}


def _not_a_lock(path: Path, what: str) -> QPMError:
    return QPMError(f"{path} is {what}, not qpm's lock file; qpm will not write through it.",
                    f"Remove {path} (qpm makes a new one), or use another --run-dir.")


def claim(folder: str | Path, command: str | None = None, *, new: bool = False) -> RunLock:
    """The held lock of a run folder this process may write: one that does not exist yet
    (made now), is empty, or is a run folder; ``new``: not a run folder yet (import-reference).
    The folder is checked before the lock is taken (nothing is created in a folder that is
    refused) and again under it (another process may have filled it meanwhile)."""
    check_run_dir(folder, new)
    lock = RunLock(folder, command).acquire()
    try:
        if _HELD[os.path.realpath(folder)][1] == 1:  # first taken now, not re-entered
            check_run_dir(folder, new)
    except BaseException:
        lock.release()
        raise
    return lock


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
            return _shown(text)
        time.sleep(0.02)
    return "another process"


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporaries a killed writer left (call with the lock held): only files
    qpm names so (:func:`qpm.io.is_temp_name`), only in the folders qpm writes."""
    folder = Path(folder)
    places = [folder, folder / RECORDS, folder / TOKENS]  # TOKENS: its manifest's writes
    for variant in sorted((folder / VARIANTS).glob("*")):
        places += [variant, variant / RECORDS]
    for explain in (folder / EXPLAIN, *sorted((folder / VARIANTS).glob(f"*/{EXPLAIN}"))):
        places += [explain, *sorted(p for p in explain.rglob("*") if p.is_dir()
                                    and not p.is_symlink())] if explain.is_dir() else []
    removed = []
    for place in places:
        if not place.is_dir() or place.is_symlink():
            continue
        for path in sorted(place.iterdir()):
            if is_temp_name(path.name) and path.is_file() and not path.is_symlink():
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed
