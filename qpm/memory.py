"""How much memory this process may still take, and the one line when a job needs more."""

from __future__ import annotations

import os
from pathlib import Path

from qpm.errors import QPMError


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
