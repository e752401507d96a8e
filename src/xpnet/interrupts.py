"""Ctrl-C, SIGTERM and SIGHUP as exceptions that can wait for a save to finish.

A scheduler stops a job with SIGTERM, a person with Ctrl-C (SIGINT), a closed
terminal with SIGHUP. Each becomes an exception raised in the main thread
(:class:`KeyboardInterrupt` for SIGINT, :class:`Terminated` for SIGTERM and
SIGHUP), so the training command can say which epoch its checkpoint holds and
exit non-zero. Inside :func:`deferred` (around a checkpoint save, and the
end-of-epoch evaluation before it) a signal is only recorded and raised when
the block ends, so "the file holds epoch N" is true whenever the message is
printed. Other reasons to stop (standard output gone: :mod:`xpnet.stdio`) go
the same way through :func:`request_stop`. Once a stop has been raised,
further signals are ignored until the handlers are put back: a second Ctrl-C
50 ms after the first must not kill the process while it says what is saved.

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
    "request_stop",
    "stop_request",
]


class Terminated(BaseException):
    """SIGTERM (or SIGHUP, or another reason to stop that is not Ctrl-C) was
    received: a BaseException, like KeyboardInterrupt. ``exit_code``: the
    process's exit status for it (143 for SIGTERM, 129 for SIGHUP)."""

    exit_code = 128 + signal.SIGTERM

    def __init__(
        self, message: str = "terminated (SIGTERM)", exit_code: int | None = None
    ) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


#: the signals routed through the handler (SIGHUP where the platform has it)
SIGNALS = tuple(
    getattr(signal, name)
    for name in ("SIGINT", "SIGTERM", "SIGHUP")
    if hasattr(signal, name)
)


class _State:
    """How deep in :func:`deferred` blocks we are, a stop held back, how
    many :func:`install` calls are in force, and whether one of their runs
    raised a stop already (later signals are then ignored)."""

    depth = 0
    pending: BaseException | None = None
    installed = 0
    raised = False


def _stop_for(signum: int) -> BaseException:
    if signum == signal.SIGINT:
        return KeyboardInterrupt()
    if signum == getattr(signal, "SIGHUP", None):
        return Terminated("hung up (SIGHUP)", exit_code=128 + signum)
    return Terminated()


def _raise(stop: BaseException) -> None:
    _State.raised = True
    raise stop


def request_stop(stop: BaseException) -> None:
    """Stop the run with ``stop`` (an exception): at once, or when the
    :func:`deferred` block in progress ends. Ignored once a stop was raised."""
    if _State.raised and _State.installed:
        return
    if _State.depth:
        if _State.pending is None:  # the first reason is the one told
            _State.pending = stop
        return
    _raise(stop)


def _handler(signum: int, frame: FrameType | None) -> None:
    request_stop(_stop_for(signum))


def install() -> Callable[[], None]:
    """Route SIGINT, SIGTERM and SIGHUP through the deferrable handler.

    Returns a function that puts the previous handlers back (a no-op outside
    the main thread, where signals cannot be handled).
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {sig: signal.getsignal(sig) for sig in SIGNALS}
    raised_before = _State.raised
    _State.raised = False  # a new run: its first signal stops it
    _State.installed += 1
    for sig in previous:
        signal.signal(sig, _handler)

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _State.installed -= 1
        if not _State.installed:  # else an outer run is stopping too
            _State.raised = raised_before

    return restore


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold signals (and :func:`request_stop`) back until the block is done,
    then raise them."""
    _State.depth += 1
    try:
        yield
    finally:
        _State.depth -= 1
        pending = _State.pending
        if not _State.depth and pending is not None:
            _State.pending = None
            _raise(pending)


#: the stop request of a pending SIGINT and of a pending SIGTERM: summed over
#: ranks, a total >= STOP_TERM means some rank was sent SIGTERM
STOP_INT, STOP_TERM = 1.0, 1024.0


def stop_request() -> float:
    """This process's held-back stop as a number to sum over ranks: 0 for
    none, :data:`STOP_INT` for SIGINT, :data:`STOP_TERM` for SIGTERM (and
    any other :class:`Terminated`)."""
    pending = _State.pending
    if pending is None:
        return 0.0
    return STOP_TERM if isinstance(pending, Terminated) else STOP_INT


def raise_agreed_stop(total: float) -> None:
    """Raise, on every rank alike, the stop that the ranks' summed requests
    ``total`` ask for (nothing when it is 0): :class:`Terminated` when any
    rank got SIGTERM, else :class:`KeyboardInterrupt` (a rank that held a
    stop of that kind raises its own, so it can say why). The exception
    carries ``agreed = True``: all ranks raise it at the same step."""
    if total <= 0:
        return
    exc: BaseException | None = _State.pending
    _State.pending = None
    wanted: type[BaseException] = (
        Terminated if total >= STOP_TERM else KeyboardInterrupt
    )
    if not isinstance(exc, wanted):
        exc = wanted()
    exc.agreed = True  # type: ignore[attr-defined]
    _raise(exc)


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
