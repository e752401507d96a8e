"""The one way xpnet writes a file: to a temporary name, then moved into place.

Checkpoints and their ``.json`` copy, pictures, ONNX files, the dataset cache
and benchmark outputs all go through :func:`atomic_write`, so a reader sees
either the old file or the complete new one, never a partial write (an
interrupted download, a full disk, Ctrl-C, a crash); the temporary file is
removed on any error. The rules for files other programs may own:

- a *new* output (``exclusive=True``) is created exclusively at the end: the
  finished temporary file is hard-linked onto the name, which fails if anything
  (a file, a symbolic link) appeared there meanwhile, so of two processes
  racing for one output the first wins and the other gets one
  :class:`OutputError` line; nothing is replaced;
- an *own* file is replaced keeping its permission bits (and owner, where the
  process may set it); with ``follow_links`` (outputs a user named: a
  checkpoint, a picture, an ONNX file) a symbolic link is written through, to
  its target, and stays a link (:func:`write_target` names the file really
  written); without it (xpnet's own cache and benchmark files) the link itself
  is replaced, never the file it points to;
- what is not a regular file (a FIFO, a device, a socket, a directory) is
  refused before any work by :func:`check_output_target`, and again here.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import XpnetError

__all__ = [
    "OutputError",
    "TEMP_MARK",
    "TEMP_NAME_EXTRA",
    "OwnedOutput",
    "atomic_write",
    "check_link_target",
    "check_output_target",
    "own_temp_files",
    "temp_prefix",
    "write_target",
]


class OutputError(XpnetError):
    """An output path that must not be written; the message is one line."""


def _current_umask() -> int:
    # os.umask can only be read by setting it; do that once, at import time.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# mkstemp creates files readable by the owner only; new files get the usual
# permissions instead (0o666 minus the umask), like open() would give them.
_FILE_MODE = 0o666 & ~_current_umask()

# os.link fails with these where the file system has no hard links (FAT, some
# network and FUSE mounts); an exclusive create of the name then claims it.
_NO_HARD_LINKS = {
    errno.EPERM,
    errno.ENOTSUP,
    errno.EOPNOTSUPP,
    errno.EXDEV,
    errno.EMLINK,
}


#: what marks a temporary file as xpnet's own: ``.<name>.xpnet-tmp-<token>.tmp``
#: (the token: mkstemp's 8 random characters). Only files named so are ever
#: cleaned up; a user's ``.<name>.backup.tmp`` is not ours and is left alone.
TEMP_MARK = "xpnet-tmp-"
_TEMP_SUFFIX = ".tmp"
_TEMP_TOKEN = r"[a-z0-9_]{8}"  # tempfile's alphabet, its fixed length

#: bytes a temporary name adds to the name of the file it becomes
TEMP_NAME_EXTRA = len("..") + len(TEMP_MARK) + 8 + len(_TEMP_SUFFIX)


def temp_prefix(path: str | os.PathLike) -> str:
    """The name prefix of the temporary files for ``path``
    (``.<name>.xpnet-tmp-``); a random token and ``.tmp`` follow. A killed
    process can leave one behind (see :func:`own_temp_files`)."""
    return f".{Path(path).name}.{TEMP_MARK}"


def own_temp_files(directory: str | os.PathLike, name: str | None) -> list[Path]:
    """The temporary files :func:`atomic_write` made in ``directory`` for the
    file ``name`` (None: for any file): named exactly as it names them, and
    regular files with one link (a symbolic link, a directory or a file
    linked elsewhere under such a name is not ours). For cleaning up after a
    killed writer; the caller makes sure none is still being written."""
    if name is None:
        prefix = r"\..+\." + re.escape(TEMP_MARK)
    else:
        prefix = re.escape(temp_prefix(name))
    pattern = re.compile(prefix + _TEMP_TOKEN + re.escape(_TEMP_SUFFIX))
    found = []
    try:
        entries = list(os.scandir(str(directory)))
    except OSError:
        return []
    for entry in entries:
        if not pattern.fullmatch(entry.name):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and st.st_nlink == 1:
            found.append(Path(entry.path))
    return found


def write_target(path: str | os.PathLike) -> Path:
    """The file a write to ``path`` lands on: ``path`` itself, or, when it is
    a symbolic link, the file the link finally points to (which may not exist
    yet)."""
    path = Path(path)
    if path.is_symlink():
        return Path(os.path.realpath(path))
    return path


def check_link_target(path: str | os.PathLike, option: str = "") -> Path:
    """Refuse a symbolic link whose target is another kind of file than
    ``path``'s suffix names (``run.npz`` -> ``notes.txt``): writing through
    it would put a checkpoint or picture into a file nobody meant. Returns
    the file a write lands on (:func:`write_target`)."""
    path = Path(path)
    target = write_target(path)
    if target != path and target.suffix.lower() != path.suffix.lower():
        raise OutputError(
            f"{option + ' ' if option else ''}{str(path)!r} is a symbolic link to "
            f"{str(target)!r}, which is not a {path.suffix or 'suffix-less'} file: "
            "name the file itself, or remove the link"
        )
    return target


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def check_output_target(path: str | os.PathLike, option: str = "") -> Path:
    """Refuse, before any work, an output that exists and is not a regular
    file (after following symbolic links): writing there could block forever
    (a FIFO) or replace something that is not ours; and a symbolic link to
    another kind of file (:func:`check_link_target`). Returns ``path``.

    Raises:
        OutputError: one line naming ``option`` (e.g. ``--plot``) and the path.
    """
    path = Path(path)
    check_link_target(path, option)
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        # Nothing there yet (or a link to nothing: created there); a parent
        # that is a file is the caller's to report, with its own words.
        return path
    except OSError as exc:
        raise OutputError(
            f"{option + ' ' if option else ''}{str(path)!r}: cannot use it "
            f"({exc.strerror or exc})"
        ) from None
    if not stat.S_ISREG(mode):
        raise OutputError(
            f"{option + ' ' if option else ''}{str(path)!r} is {_kind(mode)}, "
            "not a file xpnet can write: name a regular file"
        )
    return path


def _replaced_file_mode(target: Path) -> tuple[int, int, int] | None:
    """``(permission bits, uid, gid)`` of the regular file at ``target``, None
    when nothing (or a symbolic link, replaced as it is) is there; refuses
    anything else."""
    try:
        st = os.stat(target, follow_symlinks=False)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(st.st_mode):
        return None
    if not stat.S_ISREG(st.st_mode):
        check_output_target(target)  # raises the one-line refusal
    return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid


def _keep_owner_and_mode(fd: int, kept: tuple[int, int, int] | None) -> None:
    if kept is None:
        os.fchmod(fd, _FILE_MODE)
        return
    mode, uid, gid = kept
    st = os.fstat(fd)
    if (st.st_uid, st.st_gid) != (uid, gid):
        # Only root may give a file away; a group we belong to works too.
        with contextlib.suppress(OSError):
            os.fchown(fd, uid, gid)
    os.fchmod(fd, mode)


def _link_exclusively(tmp: str, target: Path, shown: Path) -> None:
    """Put the finished ``tmp`` at ``target`` only if nothing is there."""
    try:
        os.link(tmp, target)
        return
    except FileExistsError:
        pass
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
        try:  # claim the name, then move the finished file onto the claim
            os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            pass
        else:
            os.replace(tmp, target)
            return
    raise OutputError(
        f"{str(shown)!r} appeared while this ran (another process wrote it): "
        "left as it is, nothing written; choose another name"
    )


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike,
    *,
    exclusive: bool = False,
    follow_links: bool = False,
    before_replace: Callable[[int], None] | None = None,
) -> Iterator[BinaryIO]:
    """Open a temporary file beside ``path`` for binary writing; on success
    flush it to disk (fsync) and move it onto ``path``; on any error
    (KeyboardInterrupt included) delete it.

    Args:
        path: the file to write.
        exclusive: a new output: refuse (:class:`OutputError`) if anything
            is at ``path`` by the time the file is complete, instead of
            replacing it.
        before_replace: called with the finished file's descriptor just
            before it takes the name (e.g. to lock the new inode).
    """
    shown = Path(path)
    # Through a link even for a new output: a dangling link's target is
    # created there (exclusively: it fails if anything appears at it).
    target = write_target(shown) if follow_links else shown
    kept = None if exclusive else _replaced_file_mode(target)
    fd, tmp = tempfile.mkstemp(
        dir=target.parent, prefix=temp_prefix(target), suffix=_TEMP_SUFFIX
    )
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            _keep_owner_and_mode(f.fileno(), kept)
            os.fsync(f.fileno())
            if before_replace is not None:
                before_replace(f.fileno())
        if exclusive:
            _link_exclusively(tmp, target, shown)
        else:
            _replaced_file_mode(target)  # still a file we may replace
            os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)


class OwnedOutput:
    """An output this process writes once or again (a picture redrawn while
    a run trains): the first write creates it exclusively unless replacing
    was allowed; later writes replace it only while it is still the file this
    process wrote last, so a file another process put there is never lost.
    """

    def __init__(
        self, path: str | os.PathLike, *, may_replace: bool, follow_links: bool = True
    ) -> None:
        self.path = Path(path)
        self.may_replace = may_replace
        self.follow_links = follow_links
        self._written: tuple[int, int] | None = None

    @contextlib.contextmanager
    def write(self) -> Iterator[BinaryIO]:
        if self._written is not None:
            try:
                st = os.stat(self.path)
                now: tuple[int, int] | None = (st.st_dev, st.st_ino)
            except FileNotFoundError:
                now = None
            if now != self._written:
                raise OutputError(
                    f"{str(self.path)!r} was replaced or removed by another "
                    "process since this one wrote it: left as it is"
                )
        exclusive = self._written is None and not self.may_replace
        with atomic_write(
            self.path, exclusive=exclusive, follow_links=self.follow_links
        ) as handle:
            yield handle
        st = os.stat(self.path)
        self._written = (st.st_dev, st.st_ino)
