"""A rank that waits too long in a collective stops the run with one line.

MPI collectives block until every rank has joined. A rank that is stopped
(SIGSTOP, a debugger), hung or swapped out would leave the others waiting
forever without a word, busy-polling their cores. :class:`StallWatch` is a
daemon thread beside the training: each blocking collective is run inside
:meth:`StallWatch.waiting`, and when one has waited longer than the timeout
the thread prints one line and ends this process (``os._exit``; the MPI
launcher then ends every other rank, the stopped one included, without an
``MPI_Abort`` banner).

The timeout is ``XPNET_MPI_TIMEOUT`` seconds (default :data:`DEFAULT_TIMEOUT`,
``0`` waits forever) or the communicator's ``timeout=``. Rank 0 gives up
first; the others wait :data:`GRACE` seconds more, so that, whichever rank
stalled, one line is printed, by rank 0 when it can.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator

from ..errors import XpnetError

__all__ = ["DEFAULT_TIMEOUT", "GRACE", "StallWatch", "stall_timeout"]

#: seconds a rank may wait in one collective before the run is stopped
DEFAULT_TIMEOUT = 300.0
#: extra seconds the ranks other than 0 wait, so that rank 0 says it
GRACE = 2.0
#: exit status of a rank that gave up waiting
EXIT_CODE = 1


def stall_timeout(given: float | None = None) -> float | None:
    """Seconds a collective may wait: ``given``, else ``$XPNET_MPI_TIMEOUT``,
    else :data:`DEFAULT_TIMEOUT`; None (forever) for 0."""
    where = "timeout="
    if given is None:
        text = os.environ.get("XPNET_MPI_TIMEOUT", "").strip()
        if not text:
            return DEFAULT_TIMEOUT
        where = f"XPNET_MPI_TIMEOUT={text!r}:"
        try:
            given = float(text)
        except ValueError:
            given = float("nan")
    if not (0 <= given < float("inf")):
        raise XpnetError(
            f"{where} the MPI timeout must be a number of seconds >= 0 (0 waits "
            f"forever; default {DEFAULT_TIMEOUT:g})"
        )
    return float(given) or None


class StallWatch:
    """Ends this process, with one line on stderr, when a collective run in
    :meth:`waiting` has waited ``timeout`` seconds (plus :data:`GRACE` on
    ranks other than 0). ``note``: called then for more words (e.g. what the
    checkpoint holds), or None."""

    def __init__(self, rank: int, size: int, timeout: float | None) -> None:
        self.rank, self.size = rank, size
        self.timeout = timeout
        self.note: Callable[[], str] | None = None
        self._since: float | None = None
        self._paused = 0
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        """Around one blocking collective."""
        if self.timeout is None or self._paused:
            yield
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._watch, daemon=True)
            self._thread.start()
        self._since = time.monotonic()
        try:
            yield
        finally:
            self._since = None

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """No timeout inside: rank 0 may take long on purpose (a download)."""
        self._paused += 1
        try:
            yield
        finally:
            self._paused -= 1

    def _limit(self) -> float:
        assert self.timeout is not None
        return self.timeout + (GRACE if self.rank else 0.0)

    def _watch(self) -> None:
        limit = self._limit()
        while True:
            time.sleep(min(1.0, limit / 10))
            since = self._since
            if since is not None and time.monotonic() - since > limit:
                self._give_up()

    def _give_up(self) -> None:
        note = ""
        if self.note is not None:
            with contextlib.suppress(Exception):
                note = f"; {self.note()}"
        message = (
            f"xpnet: error: rank {self.rank} of {self.size} waited "
            f"{self.timeout:g} s for the other ranks (one is stopped, hung or "
            "gone): stopping every rank (XPNET_MPI_TIMEOUT sets the seconds, 0 "
            f"waits forever){note}"
        )
        with contextlib.suppress(Exception):
            print(message, file=sys.stderr, flush=True)
        with contextlib.suppress(Exception):
            sys.stdout.flush()
        os._exit(EXIT_CODE)
