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
