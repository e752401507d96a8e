"""Reading untrusted ``.npz`` archives: every header first, data only after checks.

``numpy.load`` allocates each array at the size its header declares before it
reads a byte of data, so a few hundred bytes can ask for terabytes. Here
:class:`NpzArchive` reads the headers of all members first (shape, dtype);
callers compare them with what they expect, and :meth:`NpzArchive.read` then
reads one array, whose size the archive has been checked to physically hold
and which is within :func:`xpnet.memory.max_array_bytes` (members never read
never count).

Every problem raises :class:`NpzFormatError`, whose one-line message says what
is wrong without naming the file: callers add the file and the fix.
"""

from __future__ import annotations

import math
import os
import zipfile
import zlib
from dataclasses import dataclass

import numpy as np

from xpnet.errors import XpnetError
from xpnet.filekinds import os_reason
from xpnet.memory import check_array_size

__all__ = [
    "NPY_MAGIC",
    "ArrayTooLarge",
    "NpyHeader",
    "NpzArchive",
    "NpzFormatError",
    "check_npy_size",
    "NpzUnreadable",
]

NPY_MAGIC = b"\x93NUMPY"

# Deflate cannot expand data more than 1032-fold (RFC 1951: a 258-byte match
# costs at least 2 bits), so a member declaring more is lying about its size.
_MAX_DEFLATE_RATIO = 1032
_MAX_HEADER_BYTES = 10_000  # numpy.load's own default limit

# Everything zipfile, zlib and numpy.lib.format raise for malformed input:
# unsupported compression is NotImplementedError, encryption RuntimeError.
_READ_ERRORS = (
    zipfile.BadZipFile,
    zlib.error,
    OSError,
    EOFError,
    ValueError,
    NotImplementedError,
    RuntimeError,
    OverflowError,
)


class NpzFormatError(XpnetError):
    """An archive or one of its arrays cannot be read; the message is one line."""


class NpzUnreadable(NpzFormatError):
    """The file could not be opened or read at all (an OS error such as too
    many open files), which says nothing about its format; the message is
    the reason."""


class ArrayTooLarge(NpzFormatError):
    """An array is larger than xpnet reads from a file (the file may be fine)."""


@dataclass(frozen=True)
class NpyHeader:
    """What one ``.npy`` member declares: its shape and dtype."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    info: zipfile.ZipInfo

    @property
    def nbytes(self) -> int:
        """Bytes of data the header declares (shape product x item size)."""
        return math.prod(self.shape) * self.dtype.itemsize


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class NpzArchive:
    """An open ``.npz`` file; use as a context manager.

    Attributes:
        headers: member name (without ``.npy``) -> :class:`NpyHeader`.
        others: names of members that are not ``.npy`` arrays.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        try:
            self._size = os.stat(path).st_size
            with open(path, "rb") as f:
                start = f.read(len(NPY_MAGIC))
        except OSError as e:
            raise NpzUnreadable(os_reason(e)) from None
        if start == NPY_MAGIC:
            raise NpzFormatError(
                "it holds a single array (.npy), not an .npz archive of named arrays"
            )
        try:
            self._zip = zipfile.ZipFile(path)
        except OSError as e:
            if e.errno is None:  # zipfile's own complaint about the bytes
                raise NpzFormatError(f"not a zip archive ({_reason(e)})") from None
            raise NpzUnreadable(os_reason(e)) from None  # e.g. EMFILE
        except _READ_ERRORS as e:
            raise NpzFormatError(f"not a zip archive ({_reason(e)})") from None
        try:
            self.headers: dict[str, NpyHeader] = {}
            self.others: list[str] = []
            for info in self._zip.infolist():
                if info.is_dir():
                    continue
                if not info.filename.endswith(".npy"):
                    self.others.append(info.filename)
                    continue
                header = self._header(info)
                self.headers[header.name] = header
        except BaseException:
            self._zip.close()
            raise

    def _header(self, info: zipfile.ZipInfo) -> NpyHeader:
        name = info.filename[: -len(".npy")]
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise NpzFormatError(
                f"array {name!r} uses zip compression method {info.compress_type}; "
                "only stored or deflated members are read (np.savez or "
                "np.savez_compressed)"
            )
        if info.compress_size > self._size:
            raise NpzFormatError(
                f"array {name!r} claims {info.compress_size} bytes but the file has "
                f"{self._size}: it is truncated or corrupt"
            )
        try:
            with self._zip.open(info) as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    read = np.lib.format.read_array_header_1_0
                elif version == (2, 0):
                    read = np.lib.format.read_array_header_2_0
                else:
                    raise ValueError(f"unsupported .npy format version {version}")
                shape, _, dtype = read(f, max_header_size=_MAX_HEADER_BYTES)
        except _READ_ERRORS as e:
            raise NpzFormatError(
                f"cannot read the header of array {name!r} ({_reason(e)})"
            ) from None
        header = NpyHeader(name, tuple(int(d) for d in shape), dtype, info)
        limit = info.compress_size
        if info.compress_type == zipfile.ZIP_DEFLATED:
            limit *= _MAX_DEFLATE_RATIO
        if header.nbytes > min(info.file_size, limit):
            raise NpzFormatError(
                f"array {name!r} declares shape {header.shape} {dtype} "
                f"({header.nbytes:,} bytes) but its member holds "
                f"{min(info.file_size, limit):,} at most: it is truncated or corrupt"
            )
        return header

    def read(self, name: str) -> np.ndarray:
        """The array ``name``, in the byte order it was stored.

        Raises NpzFormatError whose message says why, without the array's name
        (ArrayTooLarge above :func:`xpnet.memory.max_array_bytes`).
        """
        header = self.headers[name]
        try:
            check_array_size(header.nbytes, f"its shape {header.shape} {header.dtype}")
        except XpnetError as e:
            raise ArrayTooLarge(str(e)) from None
        if header.dtype.hasobject:
            raise NpzFormatError(
                "it holds Python objects, which need pickle; store plain numbers "
                "or strings"
            )
        try:
            with self._zip.open(header.info) as f:
                return np.lib.format.read_array(
                    f, allow_pickle=False, max_header_size=_MAX_HEADER_BYTES
                )
        except _READ_ERRORS as e:
            raise NpzFormatError(_reason(e)) from None

    def close(self) -> None:
        self._zip.close()

    def __enter__(self) -> NpzArchive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_npy_size(path: str | os.PathLike) -> None:
    """Raise ArrayTooLarge if the ``.npy`` file at ``path`` declares an array
    above :func:`xpnet.memory.max_array_bytes`; read its header only. Other
    problems (not a .npy file, a bad header) are left to ``numpy.load``."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                read = np.lib.format.read_array_header_1_0
            elif version == (2, 0):
                read = np.lib.format.read_array_header_2_0
            else:
                return
            shape, _, dtype = read(f, max_header_size=_MAX_HEADER_BYTES)
    except _READ_ERRORS:
        return
    nbytes = math.prod(int(d) for d in shape) * dtype.itemsize
    try:
        check_array_size(nbytes, f"its shape {tuple(shape)} {dtype}")
    except XpnetError as e:
        raise ArrayTooLarge(str(e)) from None
