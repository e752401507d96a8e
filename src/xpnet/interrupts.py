"""Ctrl-C and SIGTERM as exceptions that can wait for a save to finish.

A scheduler stops a job with SIGTERM, a person with Ctrl-C (SIGINT). Both
become exceptions raised in the main thread (:class:`KeyboardInterrupt` for
SIGINT, :class:`Terminated` for SIGTERM), so the training command can say which
epoch its checkpoint holds and exit non-zero. Inside :func:`deferred` (around a
checkpoint save) a signal is only recorded and raised when the block ends, so
"the file holds epoch N" is true whenever the message is printed.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType

__all__ = ["Terminated", "deferred", "install"]


class Terminated(BaseException):
    """SIGTERM was received (a BaseException, like KeyboardInterrupt)."""

    exit_code = 128 + signal.SIGTERM


class _State:
    depth = 0  # how many deferred() blocks are open
    pending: int | None = None  # the signal that arrived inside one


_state = _State()


def _raise_for(signum: int) -> None:
    if signum == signal.SIGTERM:
        raise Terminated("terminated (SIGTERM)")
    raise KeyboardInterrupt


def _handler(signum: int, frame: FrameType | None) -> None:
    if _state.depth:
        _state.pending = signum
        return
    _raise_for(signum)


def install() -> Callable[[], None]:
    """Route SIGINT and SIGTERM through the deferrable handler.

    Returns a function that puts the previous handlers back (a no-op outside
    the main thread, where signals cannot be handled).
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, _handler)

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM back until the block is done, then raise them."""
    _state.depth += 1
    try:
        yield
    finally:
        _state.depth -= 1
        pending = _state.pending
        if not _state.depth and pending is not None:
            _state.pending = None
            _raise_for(pending)
