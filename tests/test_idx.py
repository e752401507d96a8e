"""Tests for the IDX reader/writer: round trips and one-line errors for bad files."""

import gzip
import os
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest

from xpnet.errors import XpnetError
from xpnet.idx import IdxError, atomic_write, read_idx, write_idx

SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def _raise_one_line(path, match):
    """Read ``path``, expecting an IdxError; return its message after common checks."""
    with pytest.raises(IdxError, match=match) as info:
        read_idx(path)
    msg = str(info.value)
    assert "\n" not in msg
    assert str(path) in msg
    assert isinstance(info.value, XpnetError)
    return msg


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize(
    "dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]
)
def test_round_trip(tmp_path, dtype, suffix):
    rng = np.random.default_rng(0)
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
    if info is not None:
        a = rng.integers(info.min, info.max, size=(3, 4, 5), endpoint=True)
    else:
        a = rng.normal(scale=1e3, size=(3, 4, 5))
    a = a.astype(dtype)
    path = write_idx(tmp_path / f"a.idx{suffix}", a)
    b = read_idx(path)
    assert b.dtype == np.dtype(dtype)  # native byte order, not big-endian
    assert b.dtype.isnative
    assert b.shape == (3, 4, 5)
    np.testing.assert_array_equal(a, b)
    assert os.listdir(tmp_path) == [path.name]  # no temporary file left behind


def test_header_is_big_endian(tmp_path):
    write_idx(tmp_path / "a.idx", np.array([1, 258], dtype=np.int32))
    raw = (tmp_path / "a.idx").read_bytes()
    assert raw == bytes([0, 0, 0x0C, 1, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 1, 2])


def test_one_dimensional_and_gzip_detected_by_content(tmp_path):
    labels = np.arange(10, dtype=np.uint8)
    # A gzip file without .gz in its name, and a raw file with it: the magic
    # bytes decide, not the name.
    write_idx(tmp_path / "labels.gz", labels)
    (tmp_path / "compressed.idx").write_bytes((tmp_path / "labels.gz").read_bytes())
    write_idx(tmp_path / "raw.idx", labels)
    (tmp_path / "raw-named.gz").write_bytes((tmp_path / "raw.idx").read_bytes())
    for name in ("compressed.idx", "raw-named.gz"):
        np.testing.assert_array_equal(read_idx(tmp_path / name), labels)


@pytest.mark.skipif(
    not SHARED_MNIST.is_dir(), reason=f"no shared data at {SHARED_MNIST}"
)
def test_reads_real_mnist():
    images = read_idx(SHARED_MNIST / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(SHARED_MNIST / "t10k-labels-idx1-ubyte.gz")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,) and set(np.unique(labels)) == set(range(10))
    assert images.max() == 255 and images.min() == 0


@pytest.mark.parametrize("compress", [False, True])
def test_truncated_data(tmp_path, compress):
    raw = _idx_bytes(np.zeros((10, 28, 28), np.uint8))
    path = tmp_path / "t10k-images-idx3-ubyte"
    payload = raw[:-10]
    if compress:
        path = path.with_suffix(".gz")
        payload = gzip.compress(payload)
    path.write_bytes(payload)
    msg = _raise_one_line(path, "truncated")
    assert "header says 10x28x28 = 7840 bytes of data, file has 7830" in msg
    assert "re-download" in msg


def test_trailing_garbage(tmp_path):
    path = tmp_path / "labels.idx"
    path.write_bytes(_idx_bytes(np.arange(6, dtype=np.int16)) + b"extra")
    msg = _raise_one_line(path, "trailing garbage")
    assert "header says 6 = 12 bytes of data, file has 17 (5 extra bytes)" in msg


def test_truncated_header(tmp_path):
    path = tmp_path / "short.idx"
    path.write_bytes(bytes([0, 0, 8, 3, 0, 0]))
    _raise_one_line(path, "truncated: header declares 3 dimensions")
    path.write_bytes(b"\x00\x00")
    _raise_one_line(path, "too short for an IDX header")


def test_bad_magic(tmp_path):
    path = tmp_path / "notidx.gz"
    path.write_bytes(b"PK\x03\x04 this is a zip, not IDX")
    msg = _raise_one_line(path, "not an IDX file")
    assert "0x504b0304" in msg


def test_unknown_type_code_and_zero_dims(tmp_path):
    path = tmp_path / "odd.idx"
    path.write_bytes(bytes([0, 0, 0x07, 1, 0, 0, 0, 1, 5]))
    _raise_one_line(path, "unknown IDX type code 0x07")
    path.write_bytes(bytes([0, 0, 0x08, 0]))
    _raise_one_line(path, "0 dimensions")


def test_corrupt_gzip(tmp_path):
    good = gzip.compress(_idx_bytes(np.arange(5000, dtype=np.int32)))
    bad = bytearray(good)
    for i in range(20, len(bad) - 20, 7):
        bad[i] ^= 0x5A
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(bytes(bad))
    msg = _raise_one_line(path, "corrupt gzip data")
    assert "Traceback" not in msg


def test_cut_gzip_stream(tmp_path):
    good = gzip.compress(_idx_bytes(np.arange(5000, dtype=np.int32)))
    path = tmp_path / "cut.gz"
    path.write_bytes(good[: len(good) // 2])
    _raise_one_line(path, "corrupt gzip data")


def _gzip_bomb(path, head: bytes, zeros: int) -> None:
    """``head`` then ``zeros`` zero bytes, gzip-compressed as a stream."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: gzip container
    with open(path, "wb") as f:
        f.write(packer.compress(head))
        block = bytes(1 << 20)
        for _ in range(zeros >> 20):
            f.write(packer.compress(block))
        f.write(packer.flush())


def test_gzip_bomb_is_not_decompressed_past_the_declared_size(tmp_path):
    # A 10-image header followed by 256 MiB of zeros (a 250 kB file): before,
    # the whole stream was decompressed in memory before the size check.
    path = tmp_path / "bomb-idx3-ubyte.gz"
    _gzip_bomb(path, _idx_bytes(np.zeros((10, 28, 28), np.uint8)), 256 << 20)
    tracemalloc.start()
    try:
        msg = _raise_one_line(path, "trailing garbage")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "header says 10x28x28 = 7840 bytes of data, file has more" in msg
    assert peak < 16 << 20


def test_gzip_trailing_data_and_huge_declared_size(tmp_path):
    path = tmp_path / "labels.gz"
    path.write_bytes(gzip.compress(_idx_bytes(np.arange(6, dtype=np.int16)) + b"x"))
    _raise_one_line(path, "trailing garbage: header says 6 = 12 bytes")
    # A header declaring 4 GB over 100 bytes of data: truncated, nothing huge
    # allocated on the way.
    path.write_bytes(
        gzip.compress(bytes([0, 0, 8, 1]) + (2**32 - 1).to_bytes(4, "big") + bytes(100))
    )
    _raise_one_line(path, "truncated: header says 4294967295 = 4294967295 bytes")


def test_missing_file(tmp_path):
    _raise_one_line(tmp_path / "nope.gz", "file not found")


@pytest.mark.parametrize("dtype", [np.int64, np.uint16, np.complex64, np.bool_])
def test_write_rejects_unsupported_dtype(tmp_path, dtype):
    with pytest.raises(IdxError, match="IDX cannot store dtype"):
        write_idx(tmp_path / "x.idx", np.zeros(3, dtype=dtype))
    assert os.listdir(tmp_path) == []


def test_write_rejects_scalar(tmp_path):
    with pytest.raises(IdxError, match="1 to 255 dimensions"):
        write_idx(tmp_path / "x.idx", np.uint8(3))


def test_atomic_write_keeps_old_file_on_error(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_write(path) as f:
        f.write(b"partial new content")
        raise RuntimeError("interrupted")
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["data.bin"]
    with atomic_write(path) as f:
        f.write(b"new")
    assert path.read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["data.bin"]


def test_written_file_has_normal_permissions(tmp_path):
    mask = os.umask(0o022)
    os.umask(mask)
    path = write_idx(tmp_path / "x.idx", np.zeros(2, np.uint8))
    # mkstemp makes 0o600 files; the finished file must be readable like any other.
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask


def _idx_bytes(a: np.ndarray) -> bytes:
    """Uncompressed IDX encoding of ``a``, written independently of write_idx."""
    codes = {"u1": 0x08, "i1": 0x09, "i2": 0x0B, "i4": 0x0C, "f4": 0x0D, "f8": 0x0E}
    code = codes[a.dtype.str[1:]]
    header = bytes([0, 0, code, a.ndim]) + b"".join(
        d.to_bytes(4, "big") for d in a.shape
    )
    return header + a.astype(a.dtype.newbyteorder(">")).tobytes()
