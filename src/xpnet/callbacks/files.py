"""How callbacks open the files they write: never through a link, and only
files that are theirs (created exclusively, or appended to when asked)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TextIO

from ..errors import XpnetError

__all__ = ["open_log"]

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def open_log(path: str | os.PathLike, append: bool, what: str) -> TextIO:
    """``path`` opened for writing text, line-buffered.

    A new file is created exclusively (``O_EXCL``): an existing file or a
    link is refused with one line (so two runs cannot share one log), unless
    ``append``, which continues an existing regular file (a resumed run).
    ``what`` names the option or class in the message.
    """
    path = Path(path)
    if path.is_symlink():
        raise XpnetError(f"{what} {str(path)!r} is a symbolic link: give a file name")
    if path.is_dir():
        raise XpnetError(f"{what} {str(path)!r} is a directory: give a file name")
    flags = os.O_WRONLY | os.O_CREAT | _NOFOLLOW
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
    return os.fdopen(fd, "w", buffering=1, encoding="utf-8", newline="")
