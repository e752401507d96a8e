"""One training process per checkpoint file, and cleanup of its stale temp files.

:class:`CheckpointLock` takes an exclusive advisory lock (``fcntl.flock``) on
``<checkpoint>.lock`` beside the checkpoint (beside a symbolic link's target),
and on the checkpoint file itself: on the file there when the run starts, then
on each new version before it takes the name (see
:func:`xpnet.atomic.atomic_write`'s ``before_replace``). The kernel releases
the locks when the process ends, however it ends (``kill -9`` included), so a
crashed run never blocks the next one; a second process started on the same
checkpoint while the first runs is refused with one line, even when someone
deleted the lock file meanwhile (the checkpoint's own inode stays locked), and
:meth:`CheckpointLock.verify` checks before every save that the lock file is
still the one this process holds.

The lock file is not trusted either: it is opened without following links
(``O_NOFOLLOW``), must be a regular file with one link, and is only written
when it is empty or holds a process id (what xpnet writes there); anything
else is refused with one line and left as it is. While the lock is held no
other xpnet process can be writing the checkpoint, so any of xpnet's own
temporary files beside it (``.<name>.xpnet-tmp-<token>.tmp``, a regular file)
is left over from a killed save and is removed; nothing else is.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from types import TracebackType

from .atomic import own_temp_files, write_target
from .errors import XpnetError

try:  # POSIX; elsewhere the lock is a no-op and the temp cleanup still runs
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["CheckpointLock", "LockError", "remove_stale_temp_files"]

# What xpnet writes into a lock file: a process id and a newline.
_MAX_PID_TEXT = 32

# Never follow a link, never block on a FIFO, never leak into children; the
# flags a platform lacks (Windows) are left out.
_SAFE = (
    getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_CLOEXEC", 0)
)


class LockError(XpnetError):
    """Another process holds the checkpoint, or the lock file cannot be made.

    ``busy`` tells the two apart: True when another process holds the lock.
    """

    def __init__(self, message: str, busy: bool) -> None:
        super().__init__(message)
        self.busy = busy


def lock_path(checkpoint: Path) -> Path:
    target = write_target(checkpoint)
    return target.with_name(target.name + ".lock")


def _identity(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def _busy(checkpoint: Path, holder: str = "") -> LockError:
    return LockError(
        f"{str(checkpoint)!r} is in use by another xpnet process"
        + (f" (pid {holder})" if holder else "")
        + ": wait for it to finish, or --save to another file",
        busy=True,
    )


def _try_flock(fd: int) -> bool:
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


class CheckpointLock:
    """Exclusive use of ``checkpoint`` by this process, as a context manager."""

    def __init__(self, checkpoint: str | os.PathLike) -> None:
        self.checkpoint = Path(checkpoint)
        self.path = lock_path(self.checkpoint)
        self._fd: int | None = None
        self._held: int | None = None  # the checkpoint file's own descriptor
        self._retired: list[int] = []  # its versions replaced since (see adopt)

    def _open_lock_file(self) -> int:
        """The lock file's descriptor, checked to be a file xpnet may lock."""
        try:
            # The checkpoint's folder is made on the first save anyway.
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | _SAFE, 0o644)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                why = "is a symbolic link"
            elif exc.errno == errno.EISDIR:
                why = "is a directory"
            else:
                raise LockError(
                    f"cannot create the lock file {str(self.path)!r} "
                    f"({exc.strerror or exc}): choose a writable --save location",
                    busy=False,
                ) from None
        else:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                why = "is not a regular file"
            elif st.st_nlink != 1:
                why = f"has {st.st_nlink} hard links"
            elif not _looks_like_ours(fd, st.st_size):
                why = "holds something other than a process id"
            else:
                return fd
            os.close(fd)
        raise LockError(
            f"the lock file {str(self.path)!r} {why}, so it is not xpnet's: "
            "it was left as it is; move it away, or --save to another file",
            busy=False,
        )

    def acquire(self) -> CheckpointLock:
        while True:
            fd = self._open_lock_file()
            if not _try_flock(fd):
                holder = _read_pid(fd)
                os.close(fd)
                raise _busy(self.checkpoint, holder)
            # The previous holder may have unlinked the file between our open
            # and our lock: then we locked an orphan; start again.
            try:
                same = _identity(os.fstat(fd)) == _identity(
                    os.stat(self.path, follow_symlinks=False)
                )
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        # Ours now, and checked to hold nothing but a pid (or nothing).
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        try:
            self._hold_checkpoint()
        except BaseException:
            self.release()
            raise
        return self

    def _hold_checkpoint(self) -> None:
        """Lock the checkpoint file itself, if there is one: a process that
        got past a deleted lock file still finds it taken."""
        path = write_target(self.checkpoint)
        for _ in range(100):
            try:
                fd = os.open(path, os.O_RDONLY | _SAFE)
            except OSError:
                return  # not there yet (or not a file: the save refuses it)
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                return
            if not _try_flock(fd):
                os.close(fd)
                raise _busy(self.checkpoint)
            if _same_file(fd, path):
                self._held = fd
                return
            # A save replaced the file between our open and our lock: the
            # version we locked is gone; lock the one there now.
            os.close(fd)
        raise _busy(self.checkpoint)  # pragma: no cover - saved 100 times over

    def adopt(self, fd: int) -> None:
        """Lock the new version of the checkpoint (``fd``: the finished
        temporary file, before it takes the name). The old version stays
        locked until the next :meth:`verify` (the next save), well after the
        new one took its name, so the file at the name is never unlocked."""
        new = os.dup(fd)
        if not _try_flock(new):  # pragma: no cover - a fresh inode is free
            os.close(new)
            raise _busy(self.checkpoint)
        if self._held is not None:
            self._retired.append(self._held)
        self._held = new

    def _close_retired(self) -> None:
        for fd in self._retired:
            os.close(fd)
        self._retired = []

    def verify(self) -> None:
        """Before a save: does this process still hold the checkpoint?

        It does while the checkpoint file is the version it locked (no other
        process can then get past :meth:`acquire`), or else while the lock
        file is still the one it locked. A removed lock file is made again;
        otherwise :class:`LockError` (busy): another process may be using the
        checkpoint, and nothing is saved.
        """
        if self._fd is None:
            return
        self._close_retired()
        if _same_file(self._held, write_target(self.checkpoint)):
            if not os.path.lexists(self.path):
                self._make_lock_file_again()
            return
        if _same_file(self._fd, self.path):
            return
        if not os.path.lexists(self.path) and self._make_lock_file_again():
            return
        raise LockError(
            f"the lock file {str(self.path)!r} was replaced while this run held "
            f"it: another process may be using {str(self.checkpoint)!r}, so this "
            "run stopped without saving",
            busy=True,
        )

    def _make_lock_file_again(self) -> bool:
        """Create and lock the lock file someone removed; False if another
        process got there first."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | _SAFE, 0o644)
        except OSError:
            return False
        if not _try_flock(fd):  # pragma: no cover - a new file is free
            os.close(fd)
            return False
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        if self._fd is not None:
            os.close(self._fd)
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is None:
            return
        # Unlink while still holding the lock, so a waiter never locks a file
        # that is about to disappear (see the inode check in acquire), and
        # only the file this process locked, not one put there since.
        if _same_file(self._fd, self.path):
            self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None
        if self._held is not None:
            os.close(self._held)
            self._held = None
        self._close_retired()

    def __enter__(self) -> CheckpointLock:
        return self.acquire()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _same_file(fd: int | None, path: Path) -> bool:
    """Whether ``path`` (not followed) is the file open as ``fd``."""
    if fd is None:
        return False
    try:
        return _identity(os.stat(path, follow_symlinks=False)) == _identity(
            os.fstat(fd)
        )
    except OSError:
        return False


def _looks_like_ours(fd: int, size: int) -> bool:
    """Empty, or a process id and a newline: what :class:`CheckpointLock` writes."""
    return size == 0 or (size <= _MAX_PID_TEXT and _read_pid(fd) != "")


def _read_pid(fd: int) -> str:
    try:
        text = os.pread(fd, _MAX_PID_TEXT, 0).decode(errors="replace").strip()
    except OSError:
        return ""
    return text if text.isdigit() else ""


def remove_stale_temp_files(checkpoint: str | os.PathLike) -> list[Path]:
    """Delete the temp files that killed saves of ``checkpoint`` left behind.

    Only call this while holding the checkpoint's :class:`CheckpointLock`: the
    files removed are those :func:`xpnet.atomic.own_temp_files` recognises as
    :func:`xpnet.atomic.atomic_write`'s for the checkpoint and its ``.json``
    copy (marked names, regular files); any other file is left alone.
    Returns the paths removed.
    """
    checkpoint = write_target(checkpoint)
    removed = []
    for name in (checkpoint.name, checkpoint.name + ".json"):
        for tmp in own_temp_files(checkpoint.parent, name):
            try:
                tmp.unlink()
            except OSError:
                continue
            removed.append(tmp)
    return removed
