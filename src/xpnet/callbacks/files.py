"""How callbacks open the files they write: never through a link, and only
files that are theirs (created exclusively, or appended to when asked)."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TextIO

from ..errors import XpnetError
from ..filekinds import not_a_file

__all__ = ["open_log"]

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
# A FIFO that appears after the check must not block the open (it fails).
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)


def open_log(path: str | os.PathLike, append: bool, what: str) -> TextIO:
    """``path`` opened for writing text, line-buffered.

    A new file is created exclusively (``O_EXCL``): an existing file or a
    link is refused with one line (so two runs cannot share one log), unless
    ``append``, which continues an existing regular file (a resumed run);
    what is not a regular file (``/dev/full``, a FIFO) is refused as such.
    ``what`` names the option or class in the message.
    """
    path = Path(path)
    if path.is_symlink():
        raise XpnetError(f"{what} {str(path)!r} is a symbolic link: give a file name")
    if path.is_dir():
        raise XpnetError(f"{what} {str(path)!r} is a directory: give a file name")
    kind = not_a_file(path) if path.exists() else None
    if kind is not None:  # a device (/dev/full), a FIFO, a socket
        raise XpnetError(f"{what} {str(path)!r} {kind}: give a regular file's name")
    flags = os.O_WRONLY | os.O_CREAT | _NOFOLLOW | _NONBLOCK
    flags |= os.O_APPEND if append else os.O_EXCL
    try:
        fd = os.open(path, flags, 0o666)
    except FileExistsError:
        raise XpnetError(
            f"{what} {str(path)!r} already exists: remove it or choose another name"
        ) from None
    except OSError as exc:
        raise XpnetError(
            f"cannot write {what} {str(path)!r} ({exc.strerror or exc})"
        ) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # one put there since the check
        os.close(fd)
        raise XpnetError(
            f"{what} {str(path)!r} is not a regular file: give a regular file's name"
        )
    os.set_blocking(fd, True)
    return os.fdopen(fd, "w", buffering=1, encoding="utf-8", newline="")
