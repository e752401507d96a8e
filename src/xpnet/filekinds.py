"""What a path that should be a regular file is instead, in words.

An edge module (host only). A checkpoint or dataset path may name a FIFO
(reading it would block forever), ``/dev/null``, a directory, a symbolic link
loop, or nothing; "does not exist" is only right for the last. Callers put
:func:`not_a_file` into their own one-line errors.
"""

from __future__ import annotations

import errno
import os
import stat

__all__ = ["FILE_NAME_MAX", "longest_name", "not_a_file", "os_reason"]

#: bytes a file name may have where the system does not say (Linux, macOS)
FILE_NAME_MAX = 255


def not_a_file(path: str | os.PathLike) -> str | None:
    """None for a regular file (or a link to one); else what ``path`` is,
    as a phrase to follow its name: ``"does not exist"``, ``"is a FIFO
    (named pipe), not a file"``, ..."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if os.path.islink(path):
            target = os.readlink(os.fsdecode(path))
            return f"is a symbolic link to {target!r}, which does not exist"
        return "does not exist"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "is a symbolic link loop (it points back at itself)"
        return f"cannot be read ({os_reason(exc)})"
    except ValueError as exc:  # an embedded NUL byte
        return f"is not a valid path ({exc})"
    if stat.S_ISREG(mode):
        return None
    kinds = (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    )
    kind = next((name for test, name in kinds if test(mode)), "not a regular file")
    return f"is {kind}, not a file"


def os_reason(exc: OSError) -> str:
    """An OS error in words, with the fix for the ones that are not the
    file's fault (too many open files)."""
    text = exc.strerror or str(exc)
    if exc.errno in (errno.EMFILE, errno.ENFILE):
        return f"{text}: raise the limit on open files (ulimit -n) or close some"
    return text


def longest_name(directory: str | os.PathLike) -> int:
    """The most bytes a file name may have in ``directory``."""
    try:
        return int(os.pathconf(directory, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):
        return FILE_NAME_MAX
