"""One training process per checkpoint file, and cleanup of its stale temp files.

:class:`CheckpointLock` takes an exclusive advisory lock (``fcntl.flock``) on
``<checkpoint>.lock`` beside the checkpoint. The kernel releases it when the
process ends, however it ends (``kill -9`` included), so a crashed run never
blocks the next one; a second process started on the same checkpoint while
the first runs is refused with one line. While the lock is held no other xpnet
process can be writing the checkpoint, so any ``.<name>.*.tmp`` file beside it
is left over from a killed save and is removed.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType

from .atomic import temp_prefix
from .errors import XpnetError

try:  # POSIX; elsewhere the lock is a no-op and the temp cleanup still runs
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["CheckpointLock", "LockError", "remove_stale_temp_files"]


class LockError(XpnetError):
    """Another process holds the checkpoint, or the lock file cannot be made.

    ``busy`` tells the two apart: True when another process holds the lock.
    """

    def __init__(self, message: str, busy: bool) -> None:
        super().__init__(message)
        self.busy = busy


def lock_path(checkpoint: Path) -> Path:
    return checkpoint.with_name(checkpoint.name + ".lock")


class CheckpointLock:
    """Exclusive use of ``checkpoint`` by this process, as a context manager."""

    def __init__(self, checkpoint: str | os.PathLike) -> None:
        self.checkpoint = Path(checkpoint)
        self.path = lock_path(self.checkpoint)
        self._fd: int | None = None

    def acquire(self) -> CheckpointLock:
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise LockError(
                    f"cannot create the lock file {str(self.path)!r} "
                    f"({exc.strerror or exc}): choose a writable --save location",
                    busy=False,
                ) from None
            if fcntl is None:
                break
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = _read_pid(fd)
                os.close(fd)
                raise LockError(
                    f"{str(self.checkpoint)!r} is in use by another xpnet process"
                    + (f" (pid {holder})" if holder else "")
                    + ": wait for it to finish, or --save to another file",
                    busy=True,
                ) from None
            # The previous holder may have unlinked the file between our open
            # and our lock: then we locked an orphan; start again.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        # Unlink while still holding the lock, so a waiter never locks a file
        # that is about to disappear (see the inode check in acquire).
        self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> CheckpointLock:
        return self.acquire()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _read_pid(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    except OSError:
        return ""
    return text if text.isdigit() else ""


def remove_stale_temp_files(checkpoint: str | os.PathLike) -> list[Path]:
    """Delete the temp files that killed saves of ``checkpoint`` left behind.

    Only call this while holding the checkpoint's :class:`CheckpointLock`: the
    temp names are those of :func:`xpnet.atomic.atomic_write` for the checkpoint
    and its ``.json`` copy. Returns the paths removed.
    """
    checkpoint = Path(checkpoint)
    removed = []
    for name in (checkpoint.name, checkpoint.name + ".json"):
        for tmp in checkpoint.parent.glob(_glob_escape(temp_prefix(name)) + "*.tmp"):
            try:
                tmp.unlink()
            except OSError:
                continue
            removed.append(tmp)
    return removed


def _glob_escape(text: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)
