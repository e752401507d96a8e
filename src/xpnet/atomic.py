"""The one way xpnet writes a file: to a temporary name, then renamed.

Checkpoints, the dataset cache and benchmark outputs all go through
:func:`atomic_write`, so a reader sees either the old file or the complete new
one, never a partial write (an interrupted download, a full disk, Ctrl-C, a
crash); the temporary file is removed on any error.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_write", "temp_prefix"]


def _current_umask() -> int:
    # os.umask can only be read by setting it; do that once, at import time.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# mkstemp creates files readable by the owner only; finished files get the usual
# permissions instead (0o666 minus the umask), like open() would give them.
_FILE_MODE = 0o666 & ~_current_umask()


def temp_prefix(path: str | os.PathLike) -> str:
    """The name prefix of the temporary files for ``path`` (``.<name>.``); they
    end in ``.tmp``. A killed process can leave one behind."""
    return f".{Path(path).name}."


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Open a temporary file beside ``path`` for binary writing; on success
    flush it to disk (fsync) and move it onto ``path`` with :func:`os.replace`,
    on any error (KeyboardInterrupt included) delete it."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path), suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
