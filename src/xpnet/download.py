"""Downloading MNIST and Fashion-MNIST into the cache, checked by md5.

This module owns the remote side of :mod:`xpnet.datasets`: the four standard IDX
file names, the published checksums and sizes, the mirror lists, and
:func:`fetch_dataset`, which puts the files into ``<data_dir>/<name>/`` (the cache
folder is :func:`xpnet.datasets.default_data_dir`). Every file is checked against
its published md5 checksum; downloads go to a temporary file that is only moved
under the final name once the checksum matches, so an interrupted or corrupt
transfer never leaves a bad file in the cache. A download is abandoned (and the
next mirror tried) when it exceeds the file's known size plus 10%, takes longer
than its deadline (600 s by default), or stalls (:mod:`xpnet.download_limits`:
connection and headers within 30 s, then at least 1024 bytes/s over any 30 s,
like ``curl --speed-limit 1024 --speed-time 30``; ``XPNET_DOWNLOAD_TIMEOUT``,
``XPNET_DOWNLOAD_SPEED_LIMIT`` and ``XPNET_DOWNLOAD_SPEED_TIME`` change the
figures). A mirror that stalled or could not be reached is not tried again for
the other files. Mirrors are tried in order; ``XPNET_MIRRORS`` (comma-separated
base URLs) or the ``mirrors=`` argument replace the built-in list, e.g. to use a
local server. Temp files left by downloads killed long ago are removed from the
dataset's folder.

Everything public here is also importable from :mod:`xpnet.datasets`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from xpnet.atomic import own_temp_files
from xpnet.errors import DatasetError
from xpnet.transfer import (
    MirrorFailed,
    TransferLimits,
    download,
    network_reason,
    setting,
)

__all__ = [
    "DOWNLOAD_DEADLINE",
    "FASHION_MNIST_MD5",
    "FASHION_MNIST_SIZES",
    "IDX_FILES",
    "MNIST_MD5",
    "MNIST_SIZES",
    "SIZE_MARGIN",
    "DownloadFailed",
    "fetch_dataset",
    "md5sum",
    "probe_mirrors",
]

# Logged under the name it had before this module was split from datasets, so
# users' logging settings for "xpnet.datasets" keep covering downloads.
logger = logging.getLogger("xpnet.datasets")

_SAMPLE_HINT = "or use the bundled offline sample with --dataset mnist-sample"

#: The four standard file names, in the order train images, train labels, test
#: images, test labels. MNIST and Fashion-MNIST use the same names.
IDX_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)

#: Official MNIST checksums (same as torchvision.datasets.MNIST.resources).
MNIST_MD5: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}

#: Official Fashion-MNIST checksums, as published in the zalandoresearch/fashion-mnist
#: README and torchvision.datasets.FashionMNIST.resources.
FASHION_MNIST_MD5: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}

#: Sizes in bytes of the official MNIST files (what the mirrors serve).
MNIST_SIZES: dict[str, int] = {
    "train-images-idx3-ubyte.gz": 9_912_422,
    "train-labels-idx1-ubyte.gz": 28_881,
    "t10k-images-idx3-ubyte.gz": 1_648_877,
    "t10k-labels-idx1-ubyte.gz": 4_542,
}

#: Sizes in bytes of the official Fashion-MNIST files.
FASHION_MNIST_SIZES: dict[str, int] = {
    "train-images-idx3-ubyte.gz": 26_421_880,
    "train-labels-idx1-ubyte.gz": 29_515,
    "t10k-images-idx3-ubyte.gz": 4_422_102,
    "t10k-labels-idx1-ubyte.gz": 5_148,
}

#: A download may exceed the known size by this fraction (mirrors of modified
#: files, given with ``checksums=``); beyond it the mirror is abandoned, so a
#: misbehaving server cannot fill the cache.
SIZE_MARGIN = 0.1

#: Default seconds one file's download from one mirror may take in all.
DOWNLOAD_DEADLINE = 600.0


@dataclass(frozen=True)
class _RemoteSpec:
    """Where a downloadable dataset lives and how to check it."""

    mirrors: tuple[str, ...]
    md5: Mapping[str, str]
    sizes: Mapping[str, int]


_REMOTE: dict[str, _RemoteSpec] = {
    "mnist": _RemoteSpec(
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
        md5=MNIST_MD5,
        sizes=MNIST_SIZES,
    ),
    "fashion-mnist": _RemoteSpec(
        mirrors=(
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/"
            "data/fashion/",
        ),
        md5=FASHION_MNIST_MD5,
        sizes=FASHION_MNIST_SIZES,
    ),
}


def md5sum(path: str | os.PathLike) -> str:
    """Hex md5 digest of a file, read in 1 MiB chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# (path, size, mtime_ns, md5) of files already verified by this process, so a
# second load in the same run does not hash the files again.
_VERIFIED: set[tuple[str, int, int, str]] = set()


def _is_valid(path: Path, expected: str) -> tuple[bool, str]:
    """Whether ``path`` has md5 ``expected``; also returns the md5 it has."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, expected)
    if key in _VERIFIED:
        return True, expected
    got = md5sum(path)
    if got == expected:
        _VERIFIED.add(key)
    return got == expected, got


def fetch_dataset(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    download: bool = True,
    mirrors: Sequence[str] | None = None,
    timeout: float | None = None,
    deadline: float = DOWNLOAD_DEADLINE,
    max_bytes: int | None = None,
    progress: bool = False,
    checksums: Mapping[str, str] | None = None,
    files: Sequence[str] = IDX_FILES,
    speed_limit: float | None = None,
    speed_time: float | None = None,
    give_up_on_stall: bool = False,
) -> Path:
    """Make sure the IDX files of ``name`` are in the cache, with good checksums.

    Files present with the right md5 are never downloaded again. A present file
    with the wrong md5 is downloaded again (a warning is logged). ``files``: which
    of :data:`IDX_FILES` are needed (default all four; the last two are the test
    set). ``give_up_on_stall``: stop at the first mirror that stalls or cannot
    be reached, instead of trying the next (for callers with a fallback, so
    their worst case is one stall). Other arguments are as for
    :func:`load_dataset`.

    Returns:
        The dataset's directory, ``<data_dir>/<name>``.
    """
    # Imported here: xpnet.datasets (names, cache folder) imports this module.
    from xpnet.datasets import dataset_dir

    key, spec = _remote(name)
    if not deadline > 0:
        raise DatasetError("deadline must be a positive number of seconds")
    base_limits = TransferLimits(
        timeout=setting("timeout", timeout),
        deadline=deadline,
        max_bytes=1,
        speed_limit=setting("speed_limit", speed_limit),
        speed_time=setting("speed_time", speed_time),
    )
    if max_bytes is not None and not max_bytes > 0:
        raise DatasetError("max_bytes must be a positive number of bytes")
    md5 = dict(spec.md5 if checksums is None else checksums)
    if unknown := [f for f in IDX_FILES if f not in md5]:
        raise DatasetError(f"checksums= has no md5 for {', '.join(unknown)}")
    if stray := [f for f in files if f not in IDX_FILES]:
        raise DatasetError(
            f"unknown IDX file {stray[0]!r}; known: {', '.join(IDX_FILES)}"
        )
    directory = dataset_dir(key, data_dir)
    urls = _mirror_list(mirrors, spec)
    dead: set[str] = set()  # mirrors that stalled or were unreachable
    missing = []
    for fname in files:
        path = directory / fname
        if path.is_file():
            ok, got = _is_valid(path, md5[fname])
            if ok:
                continue
            if not download:
                raise DatasetError(
                    f"{path}: checksum mismatch (md5 {got}, expected {md5[fname]}); "
                    "delete it so it is downloaded again"
                )
            logger.warning(
                "%s: checksum mismatch (md5 %s, expected %s); downloading it again",
                path,
                got,
                md5[fname],
            )
        elif not download:
            missing.append(fname)
            continue
        _make_dir(directory)
        limits = replace(
            base_limits,
            max_bytes=(
                max_bytes
                if max_bytes is not None
                else int(spec.sizes[fname] * (1 + SIZE_MARGIN))
            ),
        )
        _download_from_mirrors(
            fname,
            directory,
            md5[fname],
            [u for u in urls if u not in dead],
            limits,
            progress,
            dead=dead,
            give_up_on_stall=give_up_on_stall,
        )
    if missing:
        what = "" if len(missing) == len(files) else f" ({', '.join(missing)})"
        raise DatasetError(
            f"{key} is not in the cache{what} and downloading is off; "
            f"{_where_to_put(directory)}"
        )
    return directory


def _where_to_put(directory: Path) -> str:
    """The fix-it part of the 'files missing' messages."""
    return (
        f"put the files {', '.join(IDX_FILES)} in {directory} (XPNET_DATA picks "
        f"another cache folder), {_SAMPLE_HINT}"
    )


def _remote(name: str) -> tuple[str, _RemoteSpec]:
    """``(canonical name, download spec)`` of dataset ``name``, or one line
    naming the downloadable ones."""
    # Imported here: xpnet.datasets (names, cache folder) imports this module.
    from xpnet.datasets import _canonical_name

    key = _canonical_name(name)
    if key not in _REMOTE:
        raise DatasetError(
            f"no download for dataset {name!r}; downloadable: {', '.join(_REMOTE)}"
        )
    return key, _REMOTE[key]


def _mirror_list(mirrors: Sequence[str] | None, spec: _RemoteSpec) -> list[str]:
    """Base URLs to try, in order: argument, then ``$XPNET_MIRRORS``, then
    built-in; one line naming the first that is not an http(s) or file URL."""
    source = "mirrors="
    if mirrors is None:
        env = os.environ.get("XPNET_MIRRORS", "")
        mirrors = [m for m in (s.strip() for s in env.split(",")) if m] or None
        source = "XPNET_MIRRORS"
    urls = list(spec.mirrors if mirrors is None else mirrors)
    if not urls:
        raise DatasetError("no download mirrors given (mirrors= is empty)")
    for url in urls:
        _check_mirror(url, source)
    return urls


def _check_mirror(url: str, source: str) -> None:
    """One line if ``url`` cannot be a base URL to download from."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 (parsing it checks it)
        problem = None
        if parts.scheme not in ("http", "https", "file"):
            problem = "it does not start with http://, https:// or file://"
        elif parts.scheme != "file" and not parts.hostname:
            problem = "it names no host"
    except ValueError as exc:
        problem = str(exc)
    if problem is not None:
        raise DatasetError(
            f"{source}: {url!r} is not a mirror URL ({problem}); give base URLs "
            "such as https://example.org/mnist/, comma-separated"
        )


def probe_mirrors(
    name: str, mirrors: Sequence[str] | None = None, timeout: float = 3.0
) -> str | None:
    """Whether a download of ``name`` can start: None if one of its mirrors
    accepts a TCP connection within ``timeout`` seconds in all, else why not
    (one line).

    All mirrors are tried at once, each in a daemon thread, so neither a
    resolver nor a firewall that never answers can hold the caller (or its
    exit) longer than ``timeout``. A mirror that is not http(s) (``file:``)
    cannot be probed this way and counts as reachable.
    """
    urls = _mirror_list(mirrors, _remote(name)[1])
    answers: queue.SimpleQueue[str | None] = queue.SimpleQueue()

    def connect(url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https"):
            answers.put(None)
            return
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
            with socket.create_connection((parts.hostname or "", port), timeout):
                answers.put(None)
        except (OSError, ValueError) as e:
            answers.put(network_reason(e, timeout))

    for url in urls:
        threading.Thread(target=connect, args=(url,), daemon=True).start()
    end = time.monotonic() + timeout
    failures: list[str] = []
    while len(failures) < len(urls):
        try:
            answer = answers.get(timeout=max(end - time.monotonic(), 0.0))
        except queue.Empty:
            return f"no mirror answered within {timeout:g} s"
        if answer is None:
            return None
        failures.append(answer)
    # Offline, every mirror fails the same way: say it once.
    return "; ".join(dict.fromkeys(failures))


def _make_dir(directory: Path) -> None:
    """Create the dataset's folder and check that files can be written in it
    (a read-only cache is its own error, not a failed download)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DatasetError(
            f"cannot create the data directory {directory} ({e.strerror or e}); set "
            "XPNET_DATA to a writable folder"
        ) from None
    try:
        with tempfile.TemporaryFile(dir=directory, prefix=".xpnet-probe."):
            pass
    except OSError as e:
        raise DatasetError(
            f"cannot write into the data directory {directory} "
            f"({e.strerror or e}); set XPNET_DATA to a writable folder, or put the "
            f"files there yourself ({', '.join(IDX_FILES)})"
        ) from None
    _remove_stale_temp_files(directory)


def _remove_stale_temp_files(directory: Path, max_age_s: float = 3600.0) -> None:
    """Delete temp files left by downloads killed long ago (not ones in
    progress): only xpnet's own (:func:`xpnet.atomic.own_temp_files`), never
    a user's file that merely ends in ``.tmp``."""
    cutoff = time.time() - max_age_s
    for tmp in own_temp_files(directory, None):
        try:
            if tmp.stat().st_mtime < cutoff:
                tmp.unlink()
        except OSError:
            pass  # another process may be cleaning up too


class DownloadFailed(DatasetError):
    """No mirror delivered a good file; ``reason`` is the mirrors' failures
    alone (the message adds where to put the files instead)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def _download_from_mirrors(
    fname: str,
    directory: Path,
    expected_md5: str,
    mirrors: Sequence[str],
    limits: TransferLimits,
    progress: bool,
    *,
    dead: set[str] | None = None,
    give_up_on_stall: bool = False,
) -> None:
    """Download ``fname`` into ``directory`` from the first mirror that works;
    mirrors that stall are added to ``dead``."""
    failures = []
    for base in mirrors:
        url = base.rstrip("/") + "/" + fname
        try:
            download(url, directory / fname, expected_md5, limits, progress)
            return
        except MirrorFailed as e:
            logger.info("download of %s failed: %s", url, e)
            failures.append(f"{url}: {e}")
            if e.stalled:
                if dead is not None:
                    dead.add(base)
                if give_up_on_stall:
                    break
    if not failures:
        failures.append("every mirror stalled or was unreachable for an earlier file")
    raise DownloadFailed(
        f"could not download {directory.name} file {fname} from any mirror "
        f"({'; '.join(failures)}); "
        f"{_where_to_put(directory)}",
        reason="; ".join(failures),
    )
