"""Text from files, made safe to show on a terminal.

Class names, dataset names and paths come from files anyone may have written:
printed raw, ``\\x1b[2J`` clears the screen and ``\\nxpnet: error: ...`` forges a
line. :func:`printable` is the one function every such string passes through on
its way to the terminal (the CLI applies it to whole lines it prints, its error
line included); JSON output needs nothing more, ``json.dumps`` escapes them.
"""

from __future__ import annotations

import unicodedata

__all__ = ["printable"]

# Unicode categories that move the cursor, change the terminal's state or
# reorder text rather than show a character: controls (C0, DEL, C1), format
# characters (bidirectional overrides, zero-width ones), line and paragraph
# separators, and surrogates left by undecodable file names.
_HIDDEN = {"Cc", "Cf", "Zl", "Zp", "Cs"}


def printable(text: str) -> str:
    """``text`` with every control or invisible formatting character written as
    a Python escape (``\\x1b``, ``\\n``, ``\\u202e``); everything else, including
    backslashes and non-ASCII letters, unchanged (so applying it twice changes
    nothing more)."""
    if text.isprintable():  # the common case, checked in C
        return text
    return "".join(
        _escape(c) if unicodedata.category(c) in _HIDDEN else c for c in text
    )


_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(char: str) -> str:
    if char in _SHORT:
        return _SHORT[char]
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"
