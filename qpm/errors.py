"""One exception type for every problem a user can fix.

The CLI catches :class:`QPMError`, prints its one-line message and exits with code 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class QPMError(Exception):
    """A user-facing error: ``problem`` says what is wrong, ``fix`` what to do about it."""

    exit_code = 2

    def __init__(self, problem: str, fix: str | None = None) -> None:
        # One printable line, always: a path, a name or a library message may hold breaks.
        self.problem = _one_line(problem)
        self.fix = None if fix is None else _one_line(fix)
        super().__init__(f"{self.problem} {self.fix}".strip() if fix else self.problem)


def _one_line(text: str) -> str:
    """Line breaks become spaces and other unprintable characters (terminal escapes, the
    surrogates of a non-UTF-8 file name) are escaped by :func:`qpm.text.printable`, so the
    message is one line and printing it never fails."""
    from qpm.text import printable

    text = str(text)
    if text.isprintable():
        return text
    return printable(" ".join(part.strip() for part in text.splitlines() if part.strip()))


# --- the machine says no: limits, permissions, a full disk, too little memory -----------------

# errno -> (what happened, what to do); {path} is the file or folder, {limit} the size limit.
_OS_REASONS = {
    "EFBIG": ("the file size limit of {limit} was reached",
              "Raise the limit (ulimit -f unlimited) and re-run; finished files are kept."),
    "ENOSPC": ("the disk is full", "Free some space and re-run; finished files are kept."),
    "EDQUOT": ("the disk quota is used up", "Free some space and re-run."),
    "EROFS": ("the file system is read-only", "Use a writable folder."),
    "EACCES": ("permission denied", "Make {path} writable for you, or use another folder."),
    "EPERM": ("operation not permitted", "Make {path} writable for you, or use another folder."),
    "EISDIR": ("it is a folder, not a file", "Remove or rename the folder {path}."),
    "ENOTDIR": ("a part of the path is a file, not a folder", "Choose another path."),
    "ENOMEM": ("there is not enough memory", "Free memory, or raise the limit (ulimit -v)."),
    "EMFILE": ("too many files are open", "Raise the limit (ulimit -n) and re-run."),
}


def environment_error(exc: BaseException) -> QPMError | None:
    """The one line for an error the machine caused wherever it surfaced (out of memory, a
    file size limit, permissions, a full disk); None for anything else (a bug)."""
    found = memory_error(exc)
    if found is None and isinstance(exc, OSError):
        found = os_error(exc, action=None)
    return found


def os_error(exc: OSError, path: object = None, action: str | None = "Cannot write"
             ) -> QPMError | None:
    """A one-line QPMError for an OSError the machine caused (a limit, permissions, a full
    disk): "``action`` ``path``: why", ``path`` defaulting to the error's own file name; None
    for any other OSError (a bug keeps its traceback)."""
    import errno

    name = errno.errorcode.get(exc.errno or 0, "")
    if name not in _OS_REASONS:
        if isinstance(exc, FileNotFoundError) and "No usable temporary directory" in str(exc):
            # tempfile.gettempdir() found no folder it can write a test file in
            return QPMError("No file can be written in any temporary folder (/tmp, TMPDIR): "
                            f"the file size limit is {_file_limit()}, or /tmp is full or "
                            "read-only.", "Raise the limit (ulimit -f unlimited), or set "
                            "TMPDIR to a writable folder.")
        return None
    what, fix = _OS_REASONS[name]
    where = path if path is not None else (exc.filename or "a file")
    if action is None:  # not known to be a write: say "use" where reading is as likely
        action = "Cannot use" if name in ("EACCES", "EPERM", "EISDIR", "ENOTDIR") else (
            "Cannot write")
    return QPMError(f"{action} {where}: {what.format(limit=_file_limit())}.",
                    fix.format(path=where))


def _file_limit() -> str:
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    except (ImportError, OSError, ValueError):
        return "unknown"
    return "unlimited" if soft == resource.RLIM_INFINITY else f"{soft:,} bytes (ulimit -f)"


# What importing torch and torchvision maps into the address space (VmPeak after
# `import torch, torchvision` with the CUDA wheels: benchmarks/startup.py prints it).
TORCH_ADDRESS_SPACE = 4 * 2**30


def memory_error(exc: BaseException) -> QPMError | None:
    """A one-line QPMError for running out of memory (MemoryError, or a shared library that
    could not be mapped while importing torch); None for anything else."""
    text = str(exc)
    if not (isinstance(exc, MemoryError) or (isinstance(exc, ImportError | OSError) and (
            "failed to map segment" in text or "cannot allocate memory" in text.lower()))):
        return None
    limit = _address_limit()
    need = f"about {TORCH_ADDRESS_SPACE / 2**30:.0f} GiB of address space just to load torch"
    if limit is not None:
        return QPMError(f"Out of memory: the address-space limit (ulimit -v) is "
                        f"{limit / 2**30:.1f} GiB, and qpm needs {need}.",
                        "Raise it (ulimit -v unlimited, or at least "
                        f"{TORCH_ADDRESS_SPACE // 1024} KiB) and re-run.")
    return QPMError(f"Out of memory ({type(exc).__name__}); qpm needs {need}, plus the data "
                    "and the model.", "Free memory, or use a smaller --batch-size or data set.")


def _address_limit() -> int | None:
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
    except (ImportError, OSError, ValueError):
        return None
    return None if soft == resource.RLIM_INFINITY else soft
