"""Standard streams that cannot crash a run: closed, full or broken.

An edge module (no array library). :func:`guard_standard_streams`, called by
the command line before anything else, makes three promises:

- a stream closed at start (``2>&-``, ``>&-``, ``<&-``) is opened on
  ``/dev/null``, so the process neither crashes on its first message nor
  hands the descriptor number to a file it opens later (a checkpoint written
  through "stderr" would be garbage);
- standard output that stops taking writes (``>/dev/full``, ``| head -1``,
  a hung-up terminal) stops the run like Ctrl-C: :class:`OutputLost` is
  raised (or, inside :func:`xpnet.interrupts.deferred`, held back until the
  save in progress is done), the command names what its checkpoint holds on
  stderr, and later writes go to ``/dev/null``, so the interpreter's last
  flush at exit cannot fail again (Python would exit 120);
- standard error that stops taking writes is silenced and the run goes on:
  it only carries diagnostics, and there is nowhere left to say anything.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import sys
from collections.abc import Callable
from typing import Any, TextIO

from .interrupts import Terminated, request_stop

__all__ = ["OutputLost", "guard_standard_streams"]


class OutputLost(Terminated):
    """Standard output stopped taking writes; stops a run like Ctrl-C (exit 1)."""

    def __init__(self, why: str) -> None:
        super().__init__(f"stopped: standard output {why}", exit_code=1)


def _why(exc: OSError) -> str:
    if exc.errno == errno.EPIPE or isinstance(exc, BrokenPipeError):
        return "was closed by its reader (broken pipe)"
    return f"cannot be written ({exc.strerror or exc})"


def _silence(stream: Any) -> None:
    """Point ``stream``'s descriptor at /dev/null, so that data still in its
    buffer (flushed at exit at the latest) goes nowhere instead of failing."""
    try:
        fd = stream.fileno()
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        return  # not a file (a test's capture): nothing will flush it
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, fd)
    finally:
        os.close(null)


class _GuardedStream:
    """A text stream whose write/flush failures are handled, not raised
    from deep inside whatever printed (see the module docstring)."""

    def __init__(self, stream: TextIO, on_failure: Callable[[OSError], None]) -> None:
        self._stream = stream
        self._on_failure = on_failure
        self._lost = False

    def _guarded(self, call: Callable[[], Any]) -> Any:
        if self._lost:
            with contextlib.suppress(OSError, ValueError):
                return call()  # /dev/null now; a closed file stays quiet too
            return None
        try:
            return call()
        except OSError as exc:
            self._lost = True
            _silence(self._stream)
            with contextlib.suppress(OSError, ValueError):
                # Drop what the failed write left in the buffer: /dev/null
                # takes it now.
                self._stream.flush()
            self._on_failure(exc)
            return None

    def write(self, text: str) -> int:
        self._guarded(lambda: self._stream.write(text))
        return len(text)

    def flush(self) -> None:
        self._guarded(self._stream.flush)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _stop_for_stdout(exc: OSError) -> None:
    request_stop(OutputLost(_why(exc)))


def _ignore(exc: OSError) -> None:
    pass


def _open_closed_descriptors() -> None:
    """Put /dev/null on each of 0, 1, 2 that is closed."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDONLY if fd == 0 else os.O_WRONLY)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)


def guard_standard_streams() -> Callable[[], None]:
    """Install the guards (idempotent); returns a function that puts the
    previous ``sys.stdin``/``sys.stdout``/``sys.stderr`` objects back."""
    saved = sys.stdin, sys.stdout, sys.stderr
    _open_closed_descriptors()
    if sys.stdin is None:
        sys.stdin = open(0, closefd=False)  # noqa: SIM115 (the process's stdin)
    streams = []
    for stream, fd in ((sys.stdout, 1), (sys.stderr, 2)):
        if stream is None:
            stream = open(fd, "w", closefd=False)  # noqa: SIM115 (like Python's own)
        if not isinstance(stream, _GuardedStream):
            stream = _GuardedStream(stream, _stop_for_stdout if fd == 1 else _ignore)
        streams.append(stream)
    sys.stdout, sys.stderr = streams

    def restore() -> None:
        sys.stdin, sys.stdout, sys.stderr = saved

    return restore
