"""Text from elsewhere, made safe to print on a user's terminal.

Some of what foldnet prints was written by someone else: a server's error detail, a state a
coordinator names, a value a message quotes. Printed as it came, its control characters
would drive the terminal (an escape sequence sets the window's title, clears the screen,
moves the cursor over earlier lines, or on some terminals writes the clipboard), and Unicode's
direction overrides would show the line in another order than it reads. :func:`printable`
shows each of them as its Python escape instead, so the line says what it holds.
"""

from __future__ import annotations

import unicodedata

__all__ = ["printable"]

#: Characters that reorder what follows them (Unicode's bidirectional controls).
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _shown(c: str) -> str:
    if c in "\n\t":
        return c
    if unicodedata.category(c) == "Cc" or c in _BIDI:
        return ascii(c)[1:-1]  # "\x1b", "\u202e"
    return c


def printable(text: str) -> str:
    """``text`` with every control character (but newline and tab) and every direction
    override written as its escape (``\\x1b``, ``\\u202e``)."""
    if text.isprintable():
        return text
    return "".join(_shown(c) for c in text)
