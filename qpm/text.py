"""Names as plain, printable text, and matplotlib kept from reading them as markup.

Class names come from folder names and files the user controls: a ``$`` would start
matplotlib's mathtext (``price $5 to $10`` drawn as "price 5to10", ``$\\undefinedcmd$`` a
crash), and a folder name with bytes that are not UTF-8 arrives as a str holding lone
surrogates, which neither FreeType nor ``print`` can encode. Everything that shows a name
(figures, the page, terminal summaries, CSV files) passes it through :func:`printable`, and
every figure is drawn inside :func:`plain_text`. This module imports nothing heavy (matplotlib
only when a figure is drawn), so any part of the package may use it.
"""

from __future__ import annotations

import contextlib
import functools
import unicodedata
import warnings
from collections.abc import Callable, Iterator
from typing import TypeVar

F = TypeVar("F", bound=Callable)


def printable(name: object) -> str:
    """``name`` as one line of encodable text: bytes that were not UTF-8 become ``\\xNN``,
    control and other unprintable characters ``\\uNNNN``; everything else is kept."""
    out = []
    for ch in str(name):
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:  # os.fsdecode's stand-in for an undecodable byte
            out.append(f"\\x{code - 0xDC00:02x}")
        elif 0xD800 <= code <= 0xDFFF or unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp"):
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


def shorten(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters with an ellipsis (for labels in tight spots)."""
    return text if len(text) <= width else text[: max(width - 1, 1)] + "\u2026"


def wrap(text: str, width: int, lines: int = 2) -> str:
    """``text`` on at most ``lines`` lines of ``width`` characters, the rest cut."""
    import textwrap

    parts = textwrap.wrap(text, width, break_long_words=True) or [""]
    if len(parts) > lines:
        parts = parts[: lines - 1] + [shorten(" ".join(parts[lines - 1:]), width)]
    return "\n".join(parts)


@contextlib.contextmanager
def plain_text() -> Iterator[None]:
    """Matplotlib with math parsing off (a ``$`` is a dollar sign) and without one warning per
    glyph the font lacks (names may be in any script)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    with plt.rc_context({"text.parse_math": False, "text.usetex": False}), \
            warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Glyph .* missing from")
        yield


def drawn_as_plain_text(fn: F) -> F:
    """Decorator: run a figure function inside :func:`plain_text` (creation and saving)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with plain_text():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


# Spreadsheets run a cell that starts with one of these as a formula (OWASP: CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: object) -> object:
    """A CSV cell a spreadsheet shows as text: a string starting like a formula gets a ``'``
    in front (what spreadsheets themselves do to show text), unless it is a plain number;
    numbers and other values are kept as they are."""
    if not isinstance(value, str) or not value.startswith(FORMULA_STARTS):
        return value
    try:
        float(value)
        return value  # "-0.5" is a number, not a formula
    except ValueError:
        return "'" + value


def csv_row(values: list) -> list:
    """Every cell of a row through :func:`csv_cell`: what every CSV file qpm writes does."""
    return [csv_cell(v) for v in values]
