"""One exception type for every problem a user can fix.

The CLI catches :class:`QPMError`, prints its one-line message and exits with code 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class QPMError(Exception):
    """A user-facing error: ``problem`` says what is wrong, ``fix`` what to do about it."""

    exit_code = 2

    def __init__(self, problem: str, fix: str | None = None) -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem} {fix}".strip() if fix else problem)
