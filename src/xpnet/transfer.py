"""One file from one mirror, with a connect/header timeout and a speed floor.

An edge module (host only) behind :mod:`xpnet.download`: :func:`download`
streams a URL into the cache, checked by md5 and size. A mirror that
accepts the connection and never answers, sends its headers a byte at a time,
or drips the body at 1 byte/s would otherwise hold ``xpnet train`` for hours,
since each read brings *something* before the socket timeout. So, like
``curl --connect-timeout T --speed-limit N --speed-time S``:

- the connection and the response headers must be complete within
  ``timeout`` seconds in all (default 30; ``XPNET_DOWNLOAD_TIMEOUT``);
- the body must average at least ``speed_limit`` bytes/s over any
  ``speed_time`` seconds (defaults 1024 bytes/s over 30 s, as curl's
  figures; ``XPNET_DOWNLOAD_SPEED_LIMIT``, ``XPNET_DOWNLOAD_SPEED_TIME``);
- one file from one mirror may take ``deadline`` seconds in all (600).

A :class:`Watchdog` thread measures the transfer and, when a limit is
passed, shuts the socket down, which ends the read the main thread is
blocked in at once; the caller then reports :attr:`Watchdog.reason`.
"""

from __future__ import annotations

import collections
import hashlib
import http.client
import os
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .atomic import atomic_write
from .errors import DatasetError

__all__ = [
    "DEFAULT_SPEED_LIMIT",
    "DEFAULT_SPEED_TIME",
    "DEFAULT_TIMEOUT",
    "MirrorFailed",
    "TransferLimits",
    "Watchdog",
    "download",
    "network_reason",
    "setting",
    "watched_opener",
]

#: bytes/s below which a transfer counts as stalled (curl's --speed-limit)
DEFAULT_SPEED_LIMIT = 1024.0
#: seconds a transfer may stay below the speed limit (curl's --speed-time)
DEFAULT_SPEED_TIME = 30.0
#: seconds for the connection and the response headers, in all
DEFAULT_TIMEOUT = 30.0

#: how the overall deadline's message starts (a slow mirror is not dead)
_DEADLINE = "download deadline"

_ENVIRONMENT = {
    "timeout": ("XPNET_DOWNLOAD_TIMEOUT", DEFAULT_TIMEOUT, "seconds"),
    "speed_limit": ("XPNET_DOWNLOAD_SPEED_LIMIT", DEFAULT_SPEED_LIMIT, "bytes/s"),
    "speed_time": ("XPNET_DOWNLOAD_SPEED_TIME", DEFAULT_SPEED_TIME, "seconds"),
}


def setting(name: str, given: float | None) -> float:
    """The limit ``name`` (``timeout``, ``speed_limit``, ``speed_time``):
    ``given``, else its environment variable, else the default; a value
    that is not a positive number is one line naming where it came from."""
    variable, default, unit = _ENVIRONMENT[name]
    where = f"{name}="
    if given is None:
        text = os.environ.get(variable, "").strip()
        if not text:
            return default
        where = f"{variable}={text!r}:"
        try:
            given = float(text)
        except ValueError:
            given = float("nan")
    if not (isinstance(given, int | float) and 0 < given < float("inf")):
        raise DatasetError(
            f"{where} the download {name.replace('_', ' ')} must be a positive "
            f"number of {unit} (default {default:g})"
        )
    return float(given)


@dataclass(frozen=True)
class TransferLimits:
    """How long and how much one file's download from one mirror may take.

    ``timeout``: seconds for the connection and the response headers in all;
    ``speed_limit`` (bytes/s) and ``speed_time`` (s): the body must average
    at least the limit over any ``speed_time`` seconds; ``deadline``: seconds
    in all; ``max_bytes``: the most bytes accepted.
    """

    timeout: float
    deadline: float
    max_bytes: int
    speed_limit: float = DEFAULT_SPEED_LIMIT
    speed_time: float = DEFAULT_SPEED_TIME


class Watchdog:
    """Watches one download (all its connections, redirects included) and
    shuts its socket down when a :class:`TransferLimits` limit is passed.

    Use as a context manager around the transfer; call :meth:`body_started`
    when the headers are in and :meth:`received` with the running byte count.
    """

    def __init__(self, limits: TransferLimits) -> None:
        self.limits = limits
        #: why the transfer was cut, or None
        self.reason: str | None = None
        #: whether it was cut for stalling (not for its overall deadline)
        self.stalled = False
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._start = time.monotonic()
        self._body_start: float | None = None
        self._bytes = 0
        # (time, bytes so far) looks, as far back as speed_time
        self._looks: collections.deque[tuple[float, int]] = collections.deque()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> Watchdog:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            cut = self.reason is not None
        if cut:
            self._shut(sock)

    def body_started(self) -> None:
        self._body_start = time.monotonic()

    def received(self, total: int) -> None:
        self._bytes = total

    def _watch(self) -> None:
        limits = self.limits
        period = max(min(limits.timeout, limits.speed_time) / 20, 0.01)
        while not self._done.wait(min(period, 0.5)):
            reason = self._limit_passed(time.monotonic())
            if reason is not None:
                with self._lock:
                    self.reason = reason
                    self.stalled = not reason.startswith(_DEADLINE)
                    sockets = list(self._sockets)
                for sock in sockets:
                    self._shut(sock)
                return

    def _limit_passed(self, now: float) -> str | None:
        limits, received = self.limits, self._bytes
        if now - self._start > limits.deadline:
            return (
                f"{_DEADLINE} of {limits.deadline:g} s passed after {received:,} bytes"
            )
        if self._body_start is None:
            if now - self._start > limits.timeout:
                return (
                    f"no response within {limits.timeout:g} s (connection and "
                    "headers; XPNET_DOWNLOAD_TIMEOUT sets the limit)"
                )
            return None
        looks = self._looks
        looks.append((now, received))
        while len(looks) > 1 and looks[1][0] <= now - limits.speed_time:
            looks.popleft()
        then, before = looks[0]
        if now - self._body_start < limits.speed_time or now - then < (
            limits.speed_time * 0.99
        ):
            return None
        speed = (received - before) / (now - then)
        if speed >= limits.speed_limit:
            return None
        return (
            f"slower than {limits.speed_limit:g} bytes/s for {limits.speed_time:g} "
            f"s ({speed:.0f} bytes/s, {received:,} bytes received; "
            "XPNET_DOWNLOAD_SPEED_LIMIT and XPNET_DOWNLOAD_SPEED_TIME set the floor)"
        )

    @staticmethod
    def _shut(sock: socket.socket) -> None:
        try:
            # socket.socket's own shutdown (not SSLSocket's, which is not
            # safe while another thread reads): the blocked read returns.
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
        except OSError:
            pass  # closed already


def _watched(base: type[http.client.HTTPConnection], dog: Watchdog) -> Any:
    """``base`` whose sockets are handed to ``dog`` as soon as they exist
    (before TLS, so a stalled handshake is cut too)."""

    class Watched(base):  # type: ignore[valid-type,misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)

            def create(*args: Any, **kwargs: Any) -> socket.socket:
                sock = socket.create_connection(*args, **kwargs)
                dog.watch(sock)
                return sock

            self._create_connection = create

    return Watched


def watched_opener(dog: Watchdog) -> urllib.request.OpenerDirector:
    """A urllib opener (proxies and redirects as usual) whose HTTP and HTTPS
    connections ``dog`` watches."""

    class HTTP(urllib.request.HTTPHandler):
        def http_open(self, req: Any) -> Any:
            return self.do_open(_watched(http.client.HTTPConnection, dog), req)

    class HTTPS(urllib.request.HTTPSHandler):
        def https_open(self, req: Any) -> Any:
            return self.do_open(
                _watched(http.client.HTTPSConnection, dog),
                req,
                context=self._context,  # type: ignore[attr-defined]
            )

    return urllib.request.build_opener(HTTP(), HTTPS())


class MirrorFailed(Exception):
    """One mirror could not deliver a good file; the message says why.
    ``stalled``: it stalled or could not be reached (not worth another try)."""

    def __init__(self, message: str, stalled: bool = False) -> None:
        super().__init__(message)
        self.stalled = stalled


def download(
    url: str, dest: Path, expected_md5: str, limits: TransferLimits, progress: bool
) -> None:
    """Stream ``url`` into a temp file beside ``dest``; keep it only if md5 matches.

    Raises:
        MirrorFailed: HTTP error, a limit of ``limits`` passed, too many
            bytes, dropped connection or bad checksum.
    """
    with Watchdog(limits) as dog:
        try:
            _transfer(url, dest, expected_md5, limits, progress, dog)
        except Exception:
            if dog.reason is None:
                raise
            # The watchdog cut the socket: its reason, not the read's error.
            raise MirrorFailed(dog.reason, stalled=dog.stalled) from None


def _transfer(
    url: str,
    dest: Path,
    expected_md5: str,
    limits: TransferLimits,
    progress: bool,
    dog: Watchdog,
) -> None:
    """:func:`_download`'s transfer, its sockets watched by ``dog``."""
    from xpnet import __version__

    agent = f"xpnet/{__version__}"
    request = urllib.request.Request(url, headers={"User-Agent": agent})
    # The watchdog enforces the limits; the socket's own timeout (for the
    # connect, and any one read) is only a backstop.
    timeout = max(limits.timeout, limits.speed_time) + 1.0
    end = time.monotonic() + limits.deadline
    opener = watched_opener(dog)
    try:
        with (
            atomic_write(dest) as f,
            opener.open(request, timeout=timeout) as response,
        ):
            dog.body_started()
            total = _content_length(response)
            if total is not None and total > limits.max_bytes:
                raise MirrorFailed(
                    f"it announces {total:,} bytes, more than the "
                    f"{limits.max_bytes:,} expected"
                )
            digest = hashlib.md5(usedforsecurity=False)
            received = 0
            report = _Progress(dest.name, total) if progress else None
            # read1 returns what one socket read brings, so a server dripping
            # bytes slowly cannot hold a read (and the deadline check) forever.
            read = getattr(response, "read1", response.read)
            while chunk := read(1 << 16):
                received += len(chunk)
                dog.received(received)
                if received > limits.max_bytes:
                    raise MirrorFailed(
                        f"it sent more than the {limits.max_bytes:,} bytes expected"
                    )
                if time.monotonic() > end:
                    raise MirrorFailed(
                        f"download deadline of {limits.deadline:g} s passed after "
                        f"{received:,} bytes"
                    )
                f.write(chunk)
                digest.update(chunk)
                if report:
                    report.update(received)
            if report:
                report.done(received)
            # http.client returns a short body without error when the peer
            # closes early, so count the bytes ourselves.
            if total is not None and received < total:
                raise MirrorFailed(
                    f"connection dropped after {received} of {total} bytes"
                )
            got = digest.hexdigest()
            if got != expected_md5:
                raise MirrorFailed(
                    f"checksum mismatch (md5 {got}, expected {expected_md5})"
                )
    except urllib.error.HTTPError as e:
        e.close()
        if 300 <= e.code < 400:
            # urllib's message for a loop is three lines long
            raise MirrorFailed(
                f"too many redirects or a redirect loop (HTTP {e.code})"
            ) from None
        raise MirrorFailed(f"HTTP {e.code} {_one_line(e.reason)}") from None
    except urllib.error.URLError as e:
        unreachable = isinstance(e.reason, OSError)
        raise MirrorFailed(network_reason(e.reason, timeout), unreachable) from None
    except TimeoutError:
        raise MirrorFailed(f"timed out after {timeout:g} s", True) from None
    except http.client.HTTPException as e:
        raise MirrorFailed(f"connection dropped ({type(e).__name__})") from None
    except (OSError, ValueError) as e:
        raise MirrorFailed(network_reason(e, timeout)) from None


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def network_reason(err: object, timeout: float) -> str:
    """One-line description of a network error."""
    if isinstance(err, TimeoutError):
        return f"timed out after {timeout:g} s"
    return _one_line(err) or type(err).__name__


def _content_length(response) -> int | None:
    value = response.headers.get("Content-Length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


class _Progress:
    """Download progress on stderr, updated at most every 0.2 s."""

    def __init__(self, fname: str, total: int | None) -> None:
        self.fname = fname
        self.total = total
        self.last = 0.0

    def update(self, received: int) -> None:
        now = time.monotonic()
        if now - self.last >= 0.2:
            self.last = now
            self._write(received, end="")

    def done(self, received: int) -> None:
        self._write(received, end="\n")

    def _write(self, received: int, end: str) -> None:
        mb = received / 1e6
        if self.total:
            pct = 100.0 * received / self.total
            text = f"{pct:5.1f}% of {self.total / 1e6:.1f} MB"
        else:
            text = f"{mb:.1f} MB"
        print(f"\rdownloading {self.fname}: {text}", end=end, file=sys.stderr)
