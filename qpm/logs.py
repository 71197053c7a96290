"""Messages and progress: the ``logging`` set-up of the command line, and when bars show.

Everything that reports progress logs to the ``qpm`` logger (``logging.getLogger("qpm.x")``);
the command line sends it to stderr as plain lines: INFO by default, warnings and errors only
with ``-q``, DEBUG with ``-v``. Results go to stdout. Progress bars (tqdm) show only on a
terminal, or when ``--progress`` asks for them, and never when ``TQDM_DISABLE`` is set; in a
pipe or a file the loops log one plain line per epoch or stage instead. A library's Python
warning is one log line too (``warning: ...``), not the message plus a line of its source.
As a library, qpm configures nothing: its loggers propagate to whatever the application set
up.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

LOGGER = "qpm"

_progress: bool | None = None  # None: bars when stderr is a terminal


class _StderrHandler(logging.StreamHandler):
    """A handler that writes to the CURRENT ``sys.stderr`` (tests swap it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def configure(verbosity: int = 0, progress: bool | None = None) -> None:
    """Set up the ``qpm`` logger for a command: ``verbosity`` -1 quiet, 0 normal, 1+ verbose.

    ``progress`` True forces progress bars, False forbids them, None leaves it to the
    terminal test of :func:`show_bars`.
    """
    global _progress
    _progress = progress
    level = logging.WARNING if verbosity < 0 else logging.DEBUG if verbosity > 0 else logging.INFO
    root = logging.getLogger(LOGGER)
    for h in list(root.handlers):
        if isinstance(h, _StderrHandler):
            root.removeHandler(h)
    handler = _StderrHandler()
    fmt = "%(levelname)s %(name)s: %(message)s" if verbosity > 0 else "%(message)s"
    handler.setFormatter(logging.Formatter(fmt))
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False
    if verbosity < 0 and progress is None:
        _progress = False
    warnings.showwarning = _log_warning  # a library's warning: one line, like qpm's own


def _log_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Python's warnings (Pillow's, joblib's, ...) as one line on the qpm logger, instead of
    two (the message and the library's source line). The warning filters still decide
    which are shown and how often."""
    from qpm.text import printable

    logging.getLogger(f"{LOGGER}.warnings").warning(
        f"warning: {printable(message)} ({category.__name__} from "
        f"{printable(os.path.basename(filename))})")


def show_bars() -> bool:
    """Whether progress bars should be drawn now (see the module docstring)."""
    if os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("", "0", "false", "no"):
        return False
    if _progress is not None:
        return _progress
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def get(name: str) -> logging.Logger:
    """The logger ``qpm.<name>``."""
    return logging.getLogger(f"{LOGGER}.{name}")
