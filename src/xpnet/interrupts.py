"""Ctrl-C and SIGTERM as exceptions that can wait for a save to finish.

A scheduler stops a job with SIGTERM, a person with Ctrl-C (SIGINT). Both
become exceptions raised in the main thread (:class:`KeyboardInterrupt` for
SIGINT, :class:`Terminated` for SIGTERM), so the training command can say which
epoch its checkpoint holds and exit non-zero. Inside :func:`deferred` (around a
checkpoint save) a signal is only recorded and raised when the block ends, so
"the file holds epoch N" is true whenever the message is printed.

Data-parallel training runs its epochs inside :func:`deferred` too: a signal
to one rank becomes its :func:`stop_request`, which the next step's
all-reduce sums over the ranks, and every rank then stops at that same step
(:func:`raise_agreed_stop`), instead of one rank leaving the others waiting.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType

__all__ = [
    "Terminated",
    "deferred",
    "held_signals",
    "install",
    "raise_agreed_stop",
    "stop_request",
]


class Terminated(BaseException):
    """SIGTERM was received (a BaseException, like KeyboardInterrupt)."""

    exit_code = 128 + signal.SIGTERM


class _State:
    """How deep in :func:`deferred` blocks we are, and a signal held back."""

    depth = 0
    pending: int | None = None


def _raise_for(signum: int) -> None:
    if signum == signal.SIGTERM:
        raise Terminated("terminated (SIGTERM)")
    raise KeyboardInterrupt


def _handler(signum: int, frame: FrameType | None) -> None:
    if _State.depth:
        _State.pending = signum
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
    _State.depth += 1
    try:
        yield
    finally:
        _State.depth -= 1
        pending = _State.pending
        if not _State.depth and pending is not None:
            _State.pending = None
            _raise_for(pending)


#: the stop request of a pending SIGINT and of a pending SIGTERM: summed over
#: ranks, a total >= STOP_TERM means some rank was sent SIGTERM
STOP_INT, STOP_TERM = 1.0, 1024.0


def stop_request() -> float:
    """This process's held-back signal as a number to sum over ranks: 0 for
    none, :data:`STOP_INT` for SIGINT, :data:`STOP_TERM` for SIGTERM."""
    pending = _State.pending
    if pending is None:
        return 0.0
    return STOP_TERM if pending == signal.SIGTERM else STOP_INT


def raise_agreed_stop(total: float) -> None:
    """Raise, on every rank alike, the stop that the ranks' summed requests
    ``total`` ask for (nothing when it is 0): :class:`Terminated` when any
    rank got SIGTERM, else :class:`KeyboardInterrupt`. The exception carries
    ``agreed = True``: all ranks raise it at the same step."""
    if total <= 0:
        return
    _State.pending = None
    if total >= STOP_TERM:
        exc: BaseException = Terminated("terminated (SIGTERM)")
    else:
        exc = KeyboardInterrupt()
    exc.agreed = True  # type: ignore[attr-defined]
    raise exc


@contextlib.contextmanager
def held_signals() -> Iterator[None]:
    """SIGINT/SIGTERM held back (see :func:`deferred`) while the block runs,
    with this module's handler installed for it (a library caller may not have
    installed it), so the block can poll :func:`stop_request`."""
    restore = install()
    try:
        with deferred():
            yield
    finally:
        restore()
