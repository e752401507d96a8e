"""Reader and writer for the IDX file format used by MNIST and Fashion-MNIST.

An IDX file is a 4-byte magic number ``0x00 0x00 <type code> <ndim>``, then ``ndim``
big-endian uint32 dimension sizes, then the array data in C order, big-endian.
Files are often gzip-compressed; :func:`read_idx` recognises gzip by its magic bytes
(``1f 8b``), not by the file name. Format description: http://yann.lecun.com/exdb/mnist/
(bottom of the page).

Every problem with a file raises :class:`IdxError` with a one-line message that names
the file and says what is wrong, so a command-line tool can print it as it is.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path
from typing import Protocol

import numpy as np

from xpnet.atomic import atomic_write
from xpnet.errors import XpnetError
from xpnet.memory import check_array_size

__all__ = ["IDX_TYPES", "IdxError", "atomic_write", "read_idx", "write_idx"]

#: IDX type code -> big-endian NumPy dtype of the data on disk.
IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_GZIP_MAGIC = b"\x1f\x8b"
# Deflate cannot expand data more than 1032-fold (RFC 1951), the gzip
# header and trailer aside: a larger declared size is a lie.
_MAX_DEFLATE_RATIO = 1032


class _Readable(Protocol):
    """A binary file or a decompressing stream (``gzip.GzipFile``)."""

    def read(self, size: int = ..., /) -> bytes: ...


_FIX_HINT = "(re-download it or delete it from the cache)"


class IdxError(XpnetError):
    """An IDX file is unreadable: bad header, wrong size or corrupt compression."""


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (raw or gzip-compressed) into a native-endian NumPy array.

    Args:
        path: the ``.idx`` / ``-ubyte`` file, compressed or not.

    Returns:
        An array with the shape given by the header (e.g. ``(10000, 28, 28)`` uint8
        for MNIST images, ``(10000,)`` uint8 for labels) and the dtype given by the
        type code, converted to native byte order.

    Raises:
        IdxError: the file is missing, is not IDX, is truncated, has trailing bytes,
            or its gzip stream is corrupt. The message is one line naming the file.
    """
    name = str(path)
    try:
        f = open(path, "rb")  # noqa: SIM115 (closed below, after the gzip check)
    except FileNotFoundError:
        raise IdxError(f"{name}: file not found") from None
    except OSError as e:
        raise IdxError(f"{name}: cannot read: {e.strerror or e}") from None
    try:
        with f:
            compressed = f.read(len(_GZIP_MAGIC)) == _GZIP_MAGIC
            f.seek(0)
            size = os.fstat(f.fileno()).st_size
            if not compressed:
                return _read_stream(f, name, size)
            try:
                with gzip.GzipFile(fileobj=f, mode="rb") as gz:
                    return _read_stream(gz, name, None, compressed_size=size)
            except (OSError, EOFError, zlib.error) as e:
                # gzip reports truncation as EOFError, bit rot as BadGzipFile or
                # zlib.error.
                reason = " ".join(str(e).split()) or type(e).__name__
                raise IdxError(
                    f"{name}: corrupt gzip data ({reason}) {_FIX_HINT}"
                ) from None
    except OSError as e:
        raise IdxError(f"{name}: cannot read: {e.strerror or e}") from None


def _read_stream(
    f: _Readable, name: str, size: int | None, compressed_size: int = 0
) -> np.ndarray:
    """Header, then exactly the data it declares, from an open (decompressed) file.

    ``size``: the file's length when known (uncompressed files); else at most
    one byte more than the header declares is read, to detect trailing data,
    so a gzip bomb cannot decompress past the declared size. The declared
    size is checked before any data is read: against what ``compressed_size``
    bytes of deflate can hold, and :func:`xpnet.memory.max_array_bytes`.
    """
    head = _read_upto(f, 4)
    dtype, ndim = _parse_magic(head, name)
    dims = _read_upto(f, 4 * ndim)
    offset = 4 + len(dims)
    if len(dims) < 4 * ndim:
        raise IdxError(
            f"{name}: truncated: header declares {ndim} dimensions but the file "
            f"ends after {offset} bytes {_FIX_HINT}"
        )
    shape = struct.unpack(f">{ndim}I", dims)
    expected = math.prod(shape) * dtype.itemsize
    if size is not None:
        # Uncompressed: the length is known before reading any data.
        _check_length(size - offset, expected, shape, name)
    _check_declared(expected, shape, dtype, name, size, compressed_size)
    if size is not None:
        data = _read_upto(f, expected)
        _check_length(len(data), expected, shape, name)
    else:
        data = _read_upto(f, expected + 1)
        _check_length(len(data), expected, shape, name, exact=False)
    array = np.frombuffer(data, dtype=dtype).reshape(shape)
    # Native byte order: callers get a writable, ordinary array (the buffer is
    # a fresh bytearray, so single-byte types need no copy).
    return array.astype(dtype.newbyteorder("="), copy=False)


def _check_declared(
    expected: int,
    shape: tuple[int, ...],
    dtype: np.dtype,
    name: str,
    size: int | None,
    compressed_size: int,
) -> None:
    """Refuse a header declaring more than the file can hold or xpnet reads."""
    dims = "x".join(str(d) for d in shape)
    if size is None and expected > compressed_size * _MAX_DEFLATE_RATIO:
        raise IdxError(
            f"{name}: truncated: header says {dims} = {expected} bytes of data, "
            f"but {compressed_size:,} compressed bytes can hold at most "
            f"{compressed_size * _MAX_DEFLATE_RATIO:,} {_FIX_HINT}"
        )
    try:
        check_array_size(expected, f"header of shape {dims} {dtype.name}")
    except XpnetError as e:
        raise IdxError(f"{name}: {e}") from None


def _read_upto(f: _Readable, n: int) -> bytearray:
    """At most ``n`` bytes of ``f``: fewer only at its end; read in chunks."""
    buf = bytearray()
    while len(buf) < n:
        chunk = f.read(min(n - len(buf), 1 << 24))
        if not chunk:
            break
        buf += chunk
    return buf


def write_idx(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write ``array`` as an IDX file, gzip-compressed if ``path`` ends in ``.gz``.

    The file is written to a temporary name in the same directory and moved into
    place with :func:`os.replace`, so readers never see a half-written file.

    Args:
        path: destination file.
        array: at least 1-D, at most 255-D, of dtype uint8, int8, int16, int32,
            float32 or float64.

    Returns:
        The destination path.
    """
    array = np.asarray(array)
    code = _type_code(array.dtype)
    if not 1 <= array.ndim <= 255:
        raise IdxError(f"{path}: IDX needs 1 to 255 dimensions, got {array.ndim}")
    header = bytes([0, 0, code, array.ndim]) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    payload = header + np.ascontiguousarray(array, dtype=IDX_TYPES[code]).tobytes()
    path = Path(path)
    if path.name.endswith(".gz"):
        # mtime=0 makes the bytes reproducible, so checksums of fixtures are stable.
        payload = gzip.compress(payload, mtime=0)
    with atomic_write(path) as f:
        f.write(payload)
    return path


def _type_code(dtype: np.dtype) -> int:
    """IDX type code for a NumPy dtype (byte order ignored)."""
    for code, idx_dtype in IDX_TYPES.items():
        if dtype.kind == idx_dtype.kind and dtype.itemsize == idx_dtype.itemsize:
            return code
    names = "uint8, int8, int16, int32, float32, float64"
    raise IdxError(f"IDX cannot store dtype {dtype}; use one of {names}")


#: the most dimensions an IDX file may declare (NumPy 1's limit; NumPy 2's is 64)
_MAX_DIMENSIONS = 32


def _parse_magic(head: bytes | bytearray, name: str) -> tuple[np.dtype, int]:
    """Validate the 4-byte magic number; return (on-disk dtype, dimension count)."""
    if len(head) < 4:
        raise IdxError(
            f"{name}: truncated: {len(head)} bytes, too short for an IDX header "
            f"{_FIX_HINT}"
        )
    zero0, zero1, code, ndim = head[:4]
    if zero0 != 0 or zero1 != 0:
        raise IdxError(
            f"{name}: not an IDX file: magic number is 0x{bytes(head[:4]).hex()}, "
            "expected 0x0000 followed by type code and dimension count"
        )
    if code not in IDX_TYPES:
        known = ", ".join(f"0x{c:02X}" for c in IDX_TYPES)
        raise IdxError(f"{name}: unknown IDX type code 0x{code:02X} (known: {known})")
    if ndim == 0:
        raise IdxError(f"{name}: IDX header declares 0 dimensions")
    if ndim > _MAX_DIMENSIONS:
        raise IdxError(
            f"{name}: IDX header declares {ndim} dimensions; at most "
            f"{_MAX_DIMENSIONS} are read (images and labels need 1 to 3)"
        )
    return IDX_TYPES[code], ndim


def _check_length(
    actual: int, expected: int, shape: tuple[int, ...], name: str, exact: bool = True
) -> None:
    """Require the data section to be exactly as long as the header says.

    ``exact=False``: ``actual`` only says whether there is more (reading stopped
    one byte past the declared size).
    """
    if actual == expected:
        return
    dims = "x".join(str(d) for d in shape)
    what = f"header says {dims} = {expected} bytes of data"
    if actual < expected:
        raise IdxError(f"{name}: truncated: {what}, file has {actual} {_FIX_HINT}")
    extra = f"{actual - expected} extra bytes" if exact else "reading stopped there"
    raise IdxError(
        f"{name}: trailing garbage: {what}, file has "
        f"{actual if exact else 'more'} ({extra}) {_FIX_HINT}"
    )
