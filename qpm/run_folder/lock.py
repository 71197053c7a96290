"""One writer per run folder: an OS lock held for the whole command, naming its holder."""

from __future__ import annotations

import functools
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qpm.errors import QPMError
from qpm.io import is_temp_name
from qpm.run_folder.names import CONFIG, LOCK
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
            return _shown(text)
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
