"""Tests for xpnet.datasets: downloads against a local HTTP server, the bundled
sample, and bring-your-own .npz files. Nothing here touches the internet."""

import http.server
import io
import logging
import os
import re
import socket
import threading
import time
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest

from xpnet import datasets, download
from xpnet.datasets import (
    FASHION_MNIST_CLASSES,
    IDX_FILES,
    MNIST_MD5,
    DatasetError,
    build_mnist_sample,
    default_data_dir,
    load_dataset,
    load_npz,
    md5sum,
)
from xpnet.errors import XpnetError
from xpnet.idx import read_idx

SHARED = Path(__file__).resolve().parents[2] / "shared"
SHARED_MNIST = SHARED / "data" / "mnist"
needs_shared = pytest.mark.skipif(
    not SHARED_MNIST.is_dir(),
    reason=f"shared MNIST files not found at {SHARED_MNIST} (CI clones the repo with "
    "shared/ beside it)",
)

# The local mirror serves the 5k training subset under the official file names.
SERVED_FROM = {
    "train-images-idx3-ubyte.gz": "train-5k-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz": "train-5k-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz": "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz": "t10k-labels-idx1-ubyte.gz",
}
SERVED_MD5 = {
    name: datasets.SAMPLE_SOURCE_MD5[src] for name, src in SERVED_FROM.items()
}

LOGGER = "xpnet.datasets"


# --------------------------------------------------------------------------- server


class _MirrorHandler(http.server.BaseHTTPRequestHandler):
    """Serves ``/<mode>/<file>``; the mode says how to (mis)behave."""

    def do_GET(self):
        self.server.requests.append(self.path)
        _, mode, name = self.path.split("/", 2)
        data = self.server.files.get(name)
        if data is None or mode == "missing":
            self.send_error(404)
            return
        if mode == "slow":
            time.sleep(1.0)
        if mode in ("endless", "huge", "drip"):
            self._misbehave(mode, data)
            return
        if mode == "corrupt":
            flipped = bytearray(data)
            flipped[len(flipped) // 2] ^= 0xFF
            data = bytes(flipped)
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if mode == "drop":
            # Promise the whole file, send half, and let HTTP/1.0 close the socket.
            data = data[: len(data) // 2]
        self.wfile.write(data)

    def _misbehave(self, mode, data):
        """endless: zeros with no length, forever; huge: announce 2 GiB;
        drip: the real length, then one byte every 20 ms. Each stops when the
        client hangs up, or after 20 s at most."""
        self.send_response(200)
        if mode == "huge":
            self.send_header("Content-Length", str(2**31))
        elif mode == "drip":
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        stop = time.monotonic() + 20
        try:
            while time.monotonic() < stop:
                if mode == "drip":
                    self.wfile.write(b"\0")
                    self.wfile.flush()
                    time.sleep(0.02)
                else:
                    self.wfile.write(bytes(1 << 16))
        except OSError:
            pass  # the client gave up, as it should

    def log_message(self, *args):
        pass


class _MirrorServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, files):
        super().__init__(("127.0.0.1", 0), _MirrorHandler)
        self.files = files
        self.requests = []

    def handle_error(self, request, client_address):
        pass  # clients that time out leave broken pipes behind; not interesting

    def base(self, mode):
        return f"http://127.0.0.1:{self.server_address[1]}/{mode}/"

    def hits(self, mode=None):
        return [r for r in self.requests if mode is None or r.startswith(f"/{mode}/")]


@pytest.fixture(scope="module")
def served_files():
    if not SHARED_MNIST.is_dir():
        pytest.skip(f"shared MNIST files not found at {SHARED_MNIST}")
    return {
        name: (SHARED_MNIST / src).read_bytes() for name, src in SERVED_FROM.items()
    }


@pytest.fixture
def mirror(served_files):
    server = _MirrorServer(served_files)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def closed_port_url():
    """A base URL on 127.0.0.1 where nothing listens: connection refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


@pytest.fixture(autouse=True)
def _no_ambient_config(monkeypatch):
    """Tests must not depend on (or write to) the user's cache or mirror settings."""
    monkeypatch.delenv("XPNET_MIRRORS", raising=False)
    monkeypatch.delenv("XPNET_DATA", raising=False)
    download._VERIFIED.clear()


def _load(cache, mirror_urls, **kw):
    return load_dataset("mnist", cache, mirrors=mirror_urls, checksums=SERVED_MD5, **kw)


# --------------------------------------------------------------------------- download


def test_download_into_empty_cache(tmp_path, mirror):
    ds = _load(tmp_path, [mirror.base("good")])
    folder = tmp_path / "mnist"
    assert sorted(os.listdir(folder)) == sorted(IDX_FILES)  # no temp files left
    for name in IDX_FILES:
        assert md5sum(folder / name) == SERVED_MD5[name]
    assert len(mirror.hits("good")) == 4
    assert ds.name == "mnist"
    assert ds.source == str(folder)
    assert ds.x_train.shape == (5000, 784) and ds.x_train.dtype == np.uint8
    assert ds.x_test.shape == (10000, 784) and ds.x_test.dtype == np.uint8
    assert ds.y_train.dtype == np.int64 and ds.y_test.dtype == np.int64
    assert np.bincount(ds.y_train).tolist() == [500] * 10
    assert ds.num_classes == 10 and ds.image_shape == (28, 28)
    assert ds.class_names == tuple("0123456789")
    assert ds.n_features == 784
    assert "mnist" in repr(ds) and "(5000, 784)" in repr(ds)


def test_second_load_does_not_download(tmp_path, mirror):
    _load(tmp_path, [mirror.base("good")])
    assert len(mirror.requests) == 4
    download._VERIFIED.clear()  # as in a new process: checksums are hashed again
    again = _load(tmp_path, [mirror.base("good")])
    offline = _load(tmp_path, [mirror.base("good")], download=False)
    assert len(mirror.requests) == 4
    np.testing.assert_array_equal(again.x_test, offline.x_test)


def test_corrupt_mirror_falls_back_to_next(tmp_path, mirror, caplog):
    # Mirror failures are INFO: the final error (if any) lists them all.
    caplog.set_level(logging.INFO, logger=LOGGER)
    ds = _load(tmp_path, [mirror.base("corrupt"), mirror.base("good")])
    assert len(mirror.hits("corrupt")) == 4
    assert len(mirror.hits("good")) == 4
    assert "checksum mismatch" in caplog.text
    assert ds.x_train.shape == (5000, 784)
    for name in IDX_FILES:
        assert md5sum(tmp_path / "mnist" / name) == SERVED_MD5[name]


def test_dropped_connection_falls_back_to_next(tmp_path, mirror, caplog):
    # Mirror failures are INFO: the final error (if any) lists them all.
    caplog.set_level(logging.INFO, logger=LOGGER)
    ds = _load(tmp_path, [mirror.base("drop"), mirror.base("good")])
    assert len(mirror.hits("drop")) == 4
    assert "connection dropped after" in caplog.text
    assert sorted(os.listdir(tmp_path / "mnist")) == sorted(IDX_FILES)
    assert ds.x_test.shape == (10000, 784)


def test_404_refused_and_timeout_fall_back(tmp_path, mirror, closed_port_url, caplog):
    # Mirror failures are INFO: the final error (if any) lists them all.
    caplog.set_level(logging.INFO, logger=LOGGER)
    urls = [closed_port_url, mirror.base("missing"), mirror.base("slow")]
    ds = _load(tmp_path, [*urls, mirror.base("good")], timeout=0.2)
    assert "HTTP 404" in caplog.text
    assert "no response within 0.2 s (connection and headers" in caplog.text
    assert ds.y_test.shape == (10000,)
    assert sorted(os.listdir(tmp_path / "mnist")) == sorted(IDX_FILES)


def test_endless_stream_is_cut_at_the_size_cap(tmp_path, mirror, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    ds = _load(
        tmp_path, [mirror.base("endless"), mirror.base("good")], max_bytes=2 * 10**6
    )
    assert "sent more than the 2,000,000 bytes expected" in caplog.text
    assert len(mirror.hits("endless")) == 4 and len(mirror.hits("good")) == 4
    assert sorted(os.listdir(tmp_path / "mnist")) == sorted(IDX_FILES)
    assert ds.x_train.shape == (5000, 784)


def test_default_cap_is_the_known_size_plus_a_margin(tmp_path, mirror):
    with pytest.raises(DatasetError) as info:
        _load(tmp_path, [mirror.base("endless")])
    cap = int(datasets.MNIST_SIZES["train-images-idx3-ubyte.gz"] * 1.1)
    assert f"sent more than the {cap:,} bytes expected" in str(info.value)
    assert os.listdir(tmp_path / "mnist") == []  # nothing left in the cache


def test_announced_size_over_the_cap_is_refused_unread(tmp_path, mirror):
    with pytest.raises(DatasetError, match="announces 2,147,483,648 bytes"):
        _load(tmp_path, [mirror.base("huge")])
    assert os.listdir(tmp_path / "mnist") == []


def test_slow_drip_hits_the_deadline_and_falls_back(tmp_path, mirror, caplog):
    # Each byte comes well within the 5 s read timeout; only the overall
    # deadline stops it (before: 65,536 bytes at 20 ms each per read).
    caplog.set_level(logging.INFO, logger=LOGGER)
    urls = [mirror.base("drip"), mirror.base("good")]
    ds = _load(tmp_path, urls, timeout=5, deadline=0.2)
    assert "download deadline of 0.2 s passed" in caplog.text
    assert len(mirror.hits("drip")) == 4 and len(mirror.hits("good")) == 4
    assert ds.y_train.shape == (5000,)


@pytest.mark.parametrize(
    "kw", [{"deadline": 0}, {"deadline": float("nan")}, {"max_bytes": -1}]
)
def test_limits_must_be_positive(tmp_path, kw):
    with pytest.raises(DatasetError, match="must be a positive number"):
        _load(tmp_path, ["http://127.0.0.1:9/"], **kw)


def test_all_mirrors_fail_gives_one_clear_error(tmp_path, mirror, closed_port_url):
    urls = [closed_port_url, mirror.base("corrupt"), mirror.base("missing")]
    with pytest.raises(DatasetError) as info:
        _load(tmp_path, urls)
    msg = str(info.value)
    assert isinstance(info.value, XpnetError)
    assert "\n" not in msg
    assert str(tmp_path / "mnist") in msg
    for name in IDX_FILES:
        assert name in msg
    assert "mnist-sample" in msg
    assert "checksum mismatch" in msg and "HTTP 404" in msg
    # It gives up at the first file instead of timing out on each of the four,
    # and leaves nothing behind: no partial file under any name.
    assert len(mirror.requests) == 2
    assert os.listdir(tmp_path / "mnist") == []


def test_offline_without_download_never_touches_network(tmp_path, mirror):
    with pytest.raises(DatasetError) as info:
        _load(tmp_path, [mirror.base("good")], download=False)
    msg = str(info.value)
    assert mirror.requests == []
    assert "\n" not in msg
    assert "downloading is off" in msg
    assert str(tmp_path / "mnist") in msg
    assert all(name in msg for name in IDX_FILES)
    assert "--dataset mnist-sample" in msg


def test_corrupt_cached_file_is_replaced(tmp_path, mirror, caplog):
    _load(tmp_path, [mirror.base("good")])
    bad = tmp_path / "mnist" / "train-labels-idx1-ubyte.gz"
    bad.write_bytes(b"not what you expected")
    with pytest.raises(DatasetError, match="checksum mismatch.*delete it"):
        _load(tmp_path, [mirror.base("good")], download=False)
    assert len(mirror.requests) == 4
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        ds = _load(tmp_path, [mirror.base("good")])
    assert "checksum mismatch" in caplog.text and "downloading it again" in caplog.text
    assert mirror.hits()[4:] == ["/good/train-labels-idx1-ubyte.gz"]
    assert md5sum(bad) == SERVED_MD5["train-labels-idx1-ubyte.gz"]
    assert np.bincount(ds.y_train).tolist() == [500] * 10


def test_mirrors_from_environment(tmp_path, mirror, monkeypatch):
    monkeypatch.setenv(
        "XPNET_MIRRORS", f"{mirror.base('missing')}, {mirror.base('good')}"
    )
    load_dataset("mnist", tmp_path, checksums=SERVED_MD5)
    assert len(mirror.hits("missing")) == 4 and len(mirror.hits("good")) == 4


def test_data_dir_from_environment(tmp_path, mirror, monkeypatch):
    monkeypatch.setenv("XPNET_DATA", str(tmp_path / "cache"))
    assert default_data_dir() == tmp_path / "cache"
    ds = _load(None, [mirror.base("good")])
    assert ds.source == str(tmp_path / "cache" / "mnist")
    assert (tmp_path / "cache" / "mnist" / IDX_FILES[0]).is_file()


def test_fashion_mnist_names_and_folder(tmp_path, mirror):
    ds = load_dataset(
        "fashion-mnist", tmp_path, mirrors=[mirror.base("good")], checksums=SERVED_MD5
    )
    assert ds.name == "fashion-mnist"
    assert ds.class_names == FASHION_MNIST_CLASSES
    assert ds.class_names[9] == "Ankle boot"
    assert (tmp_path / "fashion-mnist" / IDX_FILES[0]).is_file()


def test_progress_goes_to_stderr(tmp_path, mirror, capsys):
    _load(tmp_path, [mirror.base("good")], progress=True)
    err = capsys.readouterr().err
    assert "downloading t10k-images-idx3-ubyte.gz" in err
    assert "100.0%" in err


def test_official_checksums():
    assert datasets.FASHION_MNIST_MD5 == {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    }
    readme = SHARED / "data" / "README.md"
    if readme.is_file():
        text = readme.read_text()
        for name, md5 in MNIST_MD5.items():
            assert f"{name} {md5}" in text


@pytest.mark.skipif(os.name == "nt" or os.uname().sysname == "Darwin", reason="XDG")
def test_default_cache_dir_follows_xdg(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_data_dir() == tmp_path / "xdg" / "xpnet"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/is/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_data_dir() == tmp_path / "home" / ".cache" / "xpnet"


def test_unknown_dataset_name():
    with pytest.raises(DatasetError, match="unknown dataset 'cifar'.*mnist-sample"):
        load_dataset("cifar")


def test_checksums_override_must_cover_all_files(tmp_path):
    with pytest.raises(DatasetError, match="no md5 for"):
        load_dataset("mnist", tmp_path, checksums={"t10k-images-idx3-ubyte.gz": "x"})


# --------------------------------------------------------------------------- sample


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the bundled sample must not use the network")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def test_mnist_sample_loads_offline(no_network):
    ds = load_dataset("mnist-sample")
    assert ds.name == "mnist-sample"
    assert ds.source == "bundled mnist-sample"
    assert ds.x_train.shape == (5000, 784) and ds.x_train.dtype == np.uint8
    assert ds.x_test.shape == (10000, 784) and ds.x_test.dtype == np.uint8
    assert ds.y_train.dtype == np.int64
    assert np.bincount(ds.y_train, minlength=10).tolist() == [500] * 10
    assert set(np.unique(ds.y_test)) == set(range(10))
    assert ds.num_classes == 10 and ds.image_shape == (28, 28)
    assert ds.class_names == tuple("0123456789")
    # Sorted by class as shipped: the trainer, not the loader, shuffles.
    assert (np.diff(ds.y_train) >= 0).all()


@needs_shared
def test_mnist_sample_equals_shared_idx_files(no_network):
    ds = load_dataset("mnist-sample")
    for split, prefix in (("train", "train-5k"), ("test", "t10k")):
        images = read_idx(SHARED_MNIST / f"{prefix}-images-idx3-ubyte.gz")
        labels = read_idx(SHARED_MNIST / f"{prefix}-labels-idx1-ubyte.gz")
        np.testing.assert_array_equal(
            getattr(ds, f"x_{split}"), images.reshape(-1, 784)
        )
        np.testing.assert_array_equal(getattr(ds, f"y_{split}"), labels)


@needs_shared
def test_build_mnist_sample(tmp_path):
    out = build_mnist_sample(SHARED_MNIST, tmp_path / "sample.npz")
    built = load_npz(out)
    shipped = load_dataset("mnist-sample")
    np.testing.assert_array_equal(built.x_train, shipped.x_train)
    np.testing.assert_array_equal(built.y_test, shipped.y_test)
    with np.load(out) as npz:
        assert {k: npz[k].dtype for k in npz.files} == dict.fromkeys(
            ("x_train", "y_train", "x_test", "y_test"), np.uint8
        )
    assert os.listdir(tmp_path) == ["sample.npz"]


def test_build_mnist_sample_checks_sources(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in datasets.SAMPLE_SOURCE_MD5:
        (src / name).write_bytes(b"junk")
    with pytest.raises(DatasetError, match="checksum mismatch"):
        build_mnist_sample(src, tmp_path / "out.npz")
    assert not (tmp_path / "out.npz").exists()


# --------------------------------------------------------------------------- npz


def _npz(path, **arrays):
    rng = np.random.default_rng(1)
    data = {
        "x_train": rng.random((12, 4, 5)).astype(np.float32),
        "y_train": np.arange(12) % 3,
        "x_test": rng.random((6, 4, 5)).astype(np.float32),
        "y_test": np.arange(6) % 4,
    }
    data.update(arrays)
    np.savez(path, **{k: v for k, v in data.items() if v is not None})
    return path


def _npz_error(path, match):
    with pytest.raises(DatasetError, match=match) as info:
        load_dataset(str(path))
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg
    return msg


def test_npz_good_file(tmp_path):
    path = _npz(tmp_path / "mine.npz")
    ds = load_dataset(str(path))
    assert ds.name == "mine" and ds.source == str(path)
    assert ds.x_train.shape == (12, 20) and ds.x_train.dtype == np.float32
    assert ds.x_test.shape == (6, 20)
    assert ds.image_shape == (4, 5)
    assert ds.num_classes == 4  # max label + 1, over train and test
    assert ds.y_train.dtype == np.int64
    assert ds.class_names is None


def test_npz_flat_features_and_class_names(tmp_path):
    path = _npz(
        tmp_path / "flat.npz",
        x_train=np.ones((12, 7)),
        x_test=np.zeros((6, 7)),
        class_names=np.array(["a", "b", "c", "d"]),
    )
    ds = load_npz(path)
    assert ds.image_shape is None and ds.n_features == 7
    assert ds.class_names == ("a", "b", "c", "d")


def test_npz_missing_key(tmp_path):
    msg = _npz_error(_npz(tmp_path / "m.npz", y_test=None), "missing key 'y_test'")
    assert "found: x_train, y_train, x_test" in msg


def test_npz_mismatched_lengths(tmp_path):
    path = _npz(tmp_path / "m.npz", y_train=np.zeros(11, np.int64))
    _npz_error(path, "x_train has 12 samples but y_train has 11")


def test_npz_negative_labels(tmp_path):
    path = _npz(tmp_path / "m.npz", y_test=np.array([0, 1, -1, 2, 0, 1]))
    _npz_error(path, "y_test has negative labels")


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ({"y_train": np.zeros(12)}, "y_train has dtype float64; expected integer"),
        ({"y_train": np.zeros((12, 1), int)}, "y_train has shape .*expected 1-D"),
        ({"x_test": np.zeros((6, 21))}, "x_train has 20 features .* x_test has 21"),
        ({"x_train": np.zeros(12)}, "x_train has shape \\(12,\\)"),
        ({"x_train": np.full((12, 3), np.nan)}, "x_train contains NaN"),
        ({"x_train": np.array([["a"] * 3] * 12)}, "x_train has dtype <U1"),
        ({"x_test": np.zeros((0, 20))}, "x_test is empty"),
        ({"class_names": np.array(["a"])}, "class_names has 1 names"),
    ],
)
def test_npz_invalid_arrays(tmp_path, arrays, match):
    _npz_error(_npz(tmp_path / "bad.npz", **arrays), match)


def test_npz_object_array_refused(tmp_path):
    path = _npz(tmp_path / "obj.npz", y_train=np.array([None] * 12, dtype=object))
    _npz_error(path, "cannot read key 'y_train'")


def test_npz_not_an_archive(tmp_path):
    path = tmp_path / "text.npz"
    path.write_text("hello")
    _npz_error(path, "not a readable .npz file")
    single = tmp_path / "single.npz"
    with open(single, "wb") as f:
        np.save(f, np.zeros(3))
    _npz_error(single, "holds a single array")
    _npz_error(tmp_path / "absent.npz", "no such file")


def test_npz_zip_without_npy_members(tmp_path):
    path = tmp_path / "notes.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("readme.txt", "hello")
        z.writestr("x_train", "no .npy suffix: numpy.load returns the raw bytes")
    msg = _npz_error(path, "missing key 'x_train'")
    assert "found: readme.txt, x_train" in msg
    with zipfile.ZipFile(path, "w") as z:
        for key in ("x_train", "y_train", "x_test", "y_test"):
            z.writestr(f"{key}.npy", b"not an array")
    _npz_error(path, "cannot read the header of array 'x_train'")


def test_npz_header_declaring_more_than_the_file_holds(tmp_path):
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": (10**7, 10**5)}
    )
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("x_train.npy", header.getvalue() + bytes(10**5))
    _npz_error(path, "declares shape \\(10000000, 100000\\) float64")


@pytest.mark.parametrize(
    ("labels", "match"),
    [
        (np.array([0, 1, 10**9, 2, 0, 1]), "label 1000000000, but at most 65,536"),
        (np.array([0, 1, 2**64 - 1, 2, 0, 1], np.uint64), "label 18446744073709551615"),
        (np.array([0, 1, 40, 2, 0, 1]), "41 classes for only 18 samples"),
    ],
)
def test_npz_absurd_labels(tmp_path, labels, match):
    # Before: a label of 10**9 made a 10**9-output model (MemoryError).
    msg = _npz_error(_npz(tmp_path / "m.npz", y_test=labels), match)
    assert "renumber" in msg


def test_npz_path_object_and_big_endian_data(tmp_path):
    x = np.arange(24, dtype=">f4").reshape(4, 6)
    y = np.arange(4)
    path = _npz(tmp_path / "be.npz", x_train=x, x_test=x, y_train=y, y_test=y)
    ds = load_dataset(path)  # a Path works as well as a str
    assert ds.x_train.dtype == np.float32 and ds.x_train.dtype.isnative
    np.testing.assert_array_equal(ds.x_train, x)
    assert ds.y_train.dtype == np.int64


def test_offline_with_some_files_missing_names_them(tmp_path, mirror):
    _load(tmp_path, [mirror.base("good")])
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetError, match=r"cache \(t10k-labels-idx1-ubyte.gz\)"):
        _load(tmp_path, [mirror.base("good")], download=False)
    assert len(mirror.requests) == 4


# --------------------------------------------------------------- default dataset
# Issue 12.4: ``xpnet train`` with no --dataset must work on an offline machine.


def test_default_dataset_is_mnist_when_downloadable_then_cached(
    tmp_path, mirror, closed_port_url
):
    chosen = datasets.choose_default_dataset(
        tmp_path, mirrors=[mirror.base("good")], checksums=SERVED_MD5
    )
    assert chosen == ("mnist", None)
    assert len(mirror.hits("good")) == 4
    # Cached: an unreachable mirror no longer matters.
    chosen = datasets.choose_default_dataset(
        tmp_path, mirrors=[closed_port_url], checksums=SERVED_MD5
    )
    assert chosen == ("mnist", None)


def test_default_dataset_offline_is_the_bundled_sample_with_one_notice(
    tmp_path, closed_port_url
):
    name, notice = datasets.choose_default_dataset(tmp_path, mirrors=[closed_port_url])
    assert name == "mnist-sample"
    assert "\n" not in notice
    assert f"MNIST is not cached in {tmp_path / 'mnist'}" in notice
    assert "no download mirror answers" in notice
    assert "--dataset mnist insists on the full set" in notice
    assert not (tmp_path / "mnist").exists()  # nothing written


def test_default_dataset_probe_waits_at_most_its_timeout(tmp_path, monkeypatch):
    """A resolver or firewall that never answers must not hold the run: the
    probe gives up after its timeout (here a connect that blocks forever)."""
    never = threading.Event()

    def hang(*args, **kwargs):
        never.wait()

    monkeypatch.setattr(socket, "create_connection", hang)
    name, notice = datasets.choose_default_dataset(
        tmp_path, mirrors=["http://192.0.2.1/"], probe_timeout=0.2
    )
    assert name == "mnist-sample"
    assert "no mirror answered within 0.2 s" in notice


def test_default_dataset_falls_back_when_the_download_fails(tmp_path, mirror):
    """A mirror that accepts connections but serves no file (a captive portal,
    a 404) gives the sample too, saying why."""
    name, notice = datasets.choose_default_dataset(
        tmp_path, mirrors=[mirror.base("missing")], checksums=SERVED_MD5
    )
    assert name == "mnist-sample"
    assert "its download failed" in notice and "HTTP 404" in notice
    assert "put the files" not in notice  # the reason only, not the how-to


def test_explicit_mnist_offline_still_fails_clearly(tmp_path, closed_port_url):
    with pytest.raises(DatasetError, match="could not download mnist file") as info:
        load_dataset("mnist", tmp_path, mirrors=[closed_port_url])
    assert "\n" not in str(info.value)


def test_test_only_downloads_and_reads_only_the_test_files(tmp_path, mirror):
    """Issue 12.5: evaluate and predict mnist:N need only the two t10k files."""
    ds = _load(tmp_path, [mirror.base("good")], test_only=True)
    assert sorted(r.rsplit("/", 1)[1] for r in mirror.hits()) == list(IDX_FILES[2:])
    assert ds.x_test.shape == (10000, 784) and ds.y_test.shape == (10000,)
    assert ds.x_train.shape == (0, 784) and ds.y_train.shape == (0,)
    assert ds.num_classes == 10


# --------------------------------------------------------------- own IDX files
# Issue 12.5: train on your own IDX files, not only .npz.


@pytest.fixture
def idx_sets(tmp_path):
    """Small IDX train and test sets: (train images, labels, test images, labels)."""
    from xpnet.idx import write_idx

    rng = np.random.default_rng(0)
    arrays = (
        rng.integers(0, 256, (30, 6, 5), dtype=np.uint8),
        np.arange(30, dtype=np.uint8) % 3,
        rng.integers(0, 256, (12, 6, 5), dtype=np.uint8),
        np.arange(12, dtype=np.uint8) % 3,
    )
    names = ("tr-x.idx", "tr-y.idx", "te-x.idx.gz", "te-y.idx")
    for name, array in zip(names, arrays, strict=True):
        write_idx(tmp_path / name, array)
    return [str(tmp_path / n) for n in names], arrays


def test_idx_pair_is_a_training_set_without_test_set(idx_sets):
    paths, (x, y, _, _) = idx_sets
    ds = load_dataset(",".join(paths[:2]))
    np.testing.assert_array_equal(ds.x_train, x.reshape(30, 30))
    np.testing.assert_array_equal(ds.y_train, y)
    assert ds.y_train.dtype == np.int64
    assert ds.x_test.shape == (0, 30) and ds.y_test.shape == (0,)
    assert ds.num_classes == 3 and ds.image_shape == (6, 5) and ds.name == "tr-x"
    with pytest.raises(DatasetError, match="hold no test set"):
        load_dataset(",".join(paths[:2]), test_only=True)


def test_idx_four_files_give_train_and_test(idx_sets):
    paths, (x, y, xt, yt) = idx_sets
    ds = load_dataset(" , ".join(paths))
    np.testing.assert_array_equal(ds.x_test, xt.reshape(12, 30))
    np.testing.assert_array_equal(ds.y_test, yt)
    assert len(ds.x_train) == 30
    only = load_dataset(",".join(paths), test_only=True)
    assert len(only.x_train) == 0 and len(only.x_test) == 12


def test_idx_folder_with_mnist_names_gz_or_not_and_dotted(tmp_path, idx_sets):
    paths, _ = idx_sets
    folder = tmp_path / "my-digits"
    folder.mkdir()
    targets = (
        "train-images-idx3-ubyte.gz",  # gzip detected by content, not name
        "train-labels.idx1-ubyte",  # the spelling of some copies
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte.gz",
    )
    for source, target in zip(paths, targets, strict=True):
        (folder / target).write_bytes(Path(source).read_bytes())
    ds = load_dataset(str(folder))
    assert (len(ds.x_train), len(ds.x_test), ds.name) == (30, 12, "my-digits")
    # Evaluating needs only the test files.
    (folder / targets[0]).unlink()
    assert len(load_dataset(folder, test_only=True).x_test) == 12
    with pytest.raises(DatasetError, match="no train-images-idx3-ubyte or train-imag"):
        load_dataset(folder)


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda p: p[0], "is a single IDX file: name its labels too, as IMAGES,LAB"),
        (lambda p: ",".join(p[:3]), "expected 2 or 4 comma-separated IDX files, got 3"),
        (lambda p: p[0] + ",", "expected 2 or 4 comma-separated IDX files, got 2"),
        (lambda p: p[0] + ",nope.idx", "nope.idx: no such file"),
        (lambda p: f"{p[0]},{p[3]}", "12 labels but tr-x.idx has 30 images"),
        (lambda p: f"{p[1]},{p[0]}", "tr-y.idx: images has shape (30,); expected one"),
        (lambda p: f"{p[0]},{p[2]}", "te-x.idx.gz: labels has shape (12, 6, 5)"),
    ],
)
def test_idx_mistakes_are_one_line(idx_sets, make, match):
    paths, _ = idx_sets
    with pytest.raises(XpnetError, match=re.escape(match)) as info:
        load_dataset(make(paths))
    assert "\n" not in str(info.value)


def test_idx_train_and_test_features_must_agree(tmp_path, idx_sets):
    from xpnet.idx import write_idx

    paths, _ = idx_sets
    write_idx(tmp_path / "wide.idx", np.zeros((12, 7, 5), np.uint8))
    with pytest.raises(DatasetError, match=r"30 features .* has 35"):
        load_dataset(",".join([*paths[:2], str(tmp_path / "wide.idx"), paths[3]]))


@pytest.mark.parametrize("call", [download.probe_mirrors, download.fetch_dataset])
def test_no_download_for_a_dataset_names_the_downloadable_ones(call):
    expected = "^no download for dataset 'mnist-sample'; downloadable: mnist, "
    with pytest.raises(DatasetError, match=expected + "fashion-mnist$"):
        call("mnist-sample")
