"""Datasets for xpnet: MNIST, Fashion-MNIST, a bundled MNIST sample, and your own .npz.

Everything here is host-side NumPy. :func:`load_dataset` returns a :class:`Dataset`
whose images are flattened to ``(n, 784)`` uint8 pixels (0-255) and whose labels are
``(n,)`` int64 class indices; :mod:`xpnet.preprocessing` turns that into floats.

MNIST and Fashion-MNIST are downloaded on first use into a cache directory (see
:func:`default_data_dir`), one sub-folder per dataset holding the four standard IDX
files. Every file is checked against its published md5 checksum; downloads go to a
temporary file that is only moved under the final name once the checksum matches,
so an interrupted or corrupt transfer never leaves a bad file in the cache.
A download is abandoned (and the next mirror tried) when it exceeds the file's
known size plus 10% or takes longer than its deadline (600 s by default).
Mirrors are tried in order; ``XPNET_MIRRORS`` (comma-separated base URLs) or the
``mirrors=`` argument replace the built-in list, e.g. to use a local server.

``mnist-sample`` ships inside the package (no network needed): 5,000 MNIST training
images (500 per class) and the official 10,000 test images.
"""

from __future__ import annotations

import hashlib
import http.client
import importlib.resources
import logging
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from xpnet.atomic import atomic_write
from xpnet.errors import XpnetError
from xpnet.idx import read_idx
from xpnet.npz import NpzArchive, NpzFormatError

__all__ = [
    "DATASET_NAMES",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_MD5",
    "FASHION_MNIST_SIZES",
    "IDX_FILES",
    "MNIST_CLASSES",
    "MAX_CLASSES",
    "MNIST_MD5",
    "MNIST_SIZES",
    "Dataset",
    "DatasetError",
    "build_mnist_sample",
    "dataset_dir",
    "default_data_dir",
    "fetch_dataset",
    "load_dataset",
    "load_mnist_sample",
    "load_npz",
    "md5sum",
]

logger = logging.getLogger(__name__)

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

MNIST_CLASSES = tuple(str(d) for d in range(10))
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

#: Source files of the bundled sample (the shared MNIST folder) and their md5s.
SAMPLE_SOURCE_MD5: dict[str, str] = {
    "train-5k-images-idx3-ubyte.gz": "81edc6ee08338daf429913bd1a71a8ff",
    "train-5k-labels-idx1-ubyte.gz": "12a57e01969d72ff608d06fba11a36a0",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}

SAMPLE_NAME = "mnist-sample"
_SAMPLE_RESOURCE = "data/mnist-sample.npz"
_SAMPLE_HINT = "or use the bundled offline sample with --dataset mnist-sample"
_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")

#: Most classes a bring-your-own dataset may have (labels 0 .. MAX_CLASSES - 1):
#: far beyond any MLP classifier's use, far below the memory a label of 10**9
#: would take as model outputs.
MAX_CLASSES = 2**16
_RENUMBER_HINT = (
    "labels must be 0, 1, ..., num_classes - 1 (renumber them with "
    "np.unique(y, return_inverse=True))"
)


@dataclass(frozen=True)
class _RemoteSpec:
    """Where a downloadable dataset lives and how to check it."""

    mirrors: tuple[str, ...]
    md5: Mapping[str, str]
    sizes: Mapping[str, int]
    class_names: tuple[str, ...]


_REMOTE: dict[str, _RemoteSpec] = {
    "mnist": _RemoteSpec(
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
        md5=MNIST_MD5,
        sizes=MNIST_SIZES,
        class_names=MNIST_CLASSES,
    ),
    "fashion-mnist": _RemoteSpec(
        mirrors=(
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/"
            "data/fashion/",
        ),
        md5=FASHION_MNIST_MD5,
        sizes=FASHION_MNIST_SIZES,
        class_names=FASHION_MNIST_CLASSES,
    ),
}

#: Names accepted by :func:`load_dataset` besides a path to an .npz file.
DATASET_NAMES = ("mnist", "fashion-mnist", SAMPLE_NAME)
_ALIASES = {
    "fashion_mnist": "fashion-mnist",
    "fashionmnist": "fashion-mnist",
    "mnist_sample": SAMPLE_NAME,
}


class DatasetError(XpnetError):
    """A dataset cannot be found, downloaded or read; the message is one line."""


@dataclass(eq=False, repr=False)
class Dataset:
    """A train/test split held as host NumPy arrays.

    Attributes:
        name: short name, e.g. ``"mnist"`` or the .npz file's stem.
        x_train: ``(n_train, n_features)`` samples; images are flattened row by row
            (MNIST: ``(n, 784)`` uint8 pixels 0-255 as loaded, floats after
            :func:`xpnet.preprocessing.preprocess`).
        y_train: ``(n_train,)`` int64 class indices in ``0 .. num_classes - 1``.
        x_test: ``(n_test, n_features)``, same layout as ``x_train``.
        y_test: ``(n_test,)`` int64.
        num_classes: number of classes (max label + 1 for your own data).
        image_shape: ``(height, width)`` of each image, or None for non-image data.
        source: where the data came from, for people: the cache directory, the
            .npz path, or ``"bundled mnist-sample"``.
        class_names: one name per class, or None when unknown.
        preprocessing: what :func:`xpnet.preprocessing.preprocess` did (empty for
            raw data); keeps e.g. the standardisation mean/std to reuse at
            prediction time.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    image_shape: tuple[int, int] | None
    source: str
    class_names: tuple[str, ...] | None = None
    preprocessing: dict[str, object] = field(default_factory=dict)

    @property
    def n_features(self) -> int:
        """Number of input features per sample (784 for MNIST)."""
        return int(self.x_train.shape[1])

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, x_train={self.x_train.shape} "
            f"{self.x_train.dtype}, x_test={self.x_test.shape} {self.x_test.dtype}, "
            f"num_classes={self.num_classes}, image_shape={self.image_shape}, "
            f"source={self.source!r})"
        )


# --------------------------------------------------------------------------- paths


def default_data_dir() -> Path:
    """The cache directory: ``$XPNET_DATA`` if set, else the platform's user cache.

    Linux and other Unix: ``$XDG_CACHE_HOME/xpnet`` or ``~/.cache/xpnet``;
    macOS: ``~/Library/Caches/xpnet``; Windows: ``%LOCALAPPDATA%\\xpnet\\Cache``.
    """
    env = os.environ.get("XPNET_DATA", "").strip()
    if env:
        return Path(env).expanduser()
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "xpnet" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "xpnet"
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    # The XDG spec says relative values are invalid and must be ignored.
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "xpnet"


def dataset_dir(name: str, data_dir: str | os.PathLike | None = None) -> Path:
    """The folder that holds (or will hold) the IDX files of dataset ``name``."""
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    return root / _canonical_name(name)


def _canonical_name(name: str) -> str:
    key = name.strip().lower()
    return _ALIASES.get(key, key)


# --------------------------------------------------------------------------- loading


def load_dataset(
    name: str | os.PathLike,
    data_dir: str | os.PathLike | None = None,
    *,
    download: bool = True,
    mirrors: Sequence[str] | None = None,
    timeout: float = 30.0,
    deadline: float = DOWNLOAD_DEADLINE,
    max_bytes: int | None = None,
    progress: bool = False,
    checksums: Mapping[str, str] | None = None,
) -> Dataset:
    """Load a dataset by name, downloading it into the cache on first use.

    Args:
        name: ``"mnist"``, ``"fashion-mnist"``, ``"mnist-sample"`` (bundled, offline)
            or a path to an ``.npz`` file with arrays ``x_train, y_train, x_test,
            y_test`` (see :func:`load_npz`).
        data_dir: cache root; default :func:`default_data_dir`. The dataset lives in
            ``<data_dir>/<name>/``.
        download: fetch missing or corrupt files; if False, only use the cache.
        mirrors: base URLs tried in order; default ``$XPNET_MIRRORS``
            (comma-separated) or the dataset's public mirrors.
        timeout: seconds to wait for a connection, or for the next bytes of a
            download, before moving to the next mirror.
        deadline: seconds one file's download from one mirror may take in all
            (checked between reads, so it can run over by up to ``timeout``);
            then the next mirror is tried. Default 600.
        max_bytes: the most bytes accepted for one file; default: its known
            size plus 10% (:data:`MNIST_SIZES`, :data:`FASHION_MNIST_SIZES`).
            A larger download is abandoned and the next mirror tried.
        progress: print download progress to stderr.
        checksums: md5 per file name, replacing the official ones (for tests and
            private mirrors of modified files).

    Returns:
        A :class:`Dataset` with uint8 images flattened to ``(n, 784)`` for the
        image datasets, and int64 labels.

    Raises:
        DatasetError: unknown name, files missing and not downloadable, or invalid
            data; the message is one line saying what to do.
    """
    name = os.fspath(name)
    key = _canonical_name(name)
    if key == SAMPLE_NAME:
        return load_mnist_sample()
    if key in _REMOTE:
        directory = fetch_dataset(
            key,
            data_dir,
            download=download,
            mirrors=mirrors,
            timeout=timeout,
            deadline=deadline,
            max_bytes=max_bytes,
            progress=progress,
            checksums=checksums,
        )
        return _load_idx_dataset(key, directory)
    if name.endswith(".npz") or Path(name).is_file():
        return load_npz(name)
    choices = ", ".join(DATASET_NAMES)
    raise DatasetError(
        f"unknown dataset {name!r}: choose one of {choices}, or give the path of an "
        ".npz file with arrays x_train, y_train, x_test, y_test"
    )


def _load_idx_dataset(key: str, directory: Path) -> Dataset:
    """Read the four verified IDX files of ``key`` from ``directory``."""
    train_x, train_y, test_x, test_y = (directory / f for f in IDX_FILES)
    x_train, image_shape = _read_images(train_x)
    x_test, _ = _read_images(test_x)
    y_train = _read_labels(train_y, len(x_train), train_x)
    y_test = _read_labels(test_y, len(x_test), test_x)
    classes = _REMOTE[key].class_names
    for path, y in ((train_y, y_train), (test_y, y_test)):
        if len(y) and y.max() >= len(classes):
            raise DatasetError(
                f"{path}: label {int(y.max())} out of range for {len(classes)} "
                f"classes (wrong file? delete it from the cache)"
            )
    return Dataset(
        name=key,
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        num_classes=len(classes),
        image_shape=image_shape,
        source=str(directory),
        class_names=classes,
    )


def _read_images(path: Path) -> tuple[np.ndarray, tuple[int, int]]:
    """``(n, h*w)`` uint8 pixels and ``(h, w)`` from an idx3 image file."""
    images = read_idx(path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DatasetError(
            f"{path}: expected (n, height, width) uint8 images, got shape "
            f"{images.shape} {images.dtype}"
        )
    n, h, w = images.shape
    return images.reshape(n, h * w), (h, w)


def _read_labels(path: Path, n_images: int, images_path: Path) -> np.ndarray:
    """``(n,)`` int64 labels from an idx1 file, checked against the image count."""
    labels = read_idx(path)
    if labels.ndim != 1:
        raise DatasetError(f"{path}: expected 1-D labels, got shape {labels.shape}")
    if len(labels) != n_images:
        raise DatasetError(
            f"{path}: {len(labels)} labels but {images_path.name} has {n_images} "
            "images (mixed-up files? delete both from the cache)"
        )
    return labels.astype(np.int64)


# --------------------------------------------------------------------------- sample


def load_mnist_sample() -> Dataset:
    """The bundled MNIST sample: 5,000 training and the 10,000 official test images.

    Needs no network. ``x_*`` are ``(n, 784)`` uint8 pixels 0-255. The training
    labels are **sorted by class** (500 zeros, then 500 ones, ...), exactly as in
    the source files: shuffle before making mini-batches.
    """
    resource = importlib.resources.files("xpnet").joinpath(_SAMPLE_RESOURCE)
    if not resource.is_file():
        raise DatasetError(
            f"the bundled sample xpnet/{_SAMPLE_RESOURCE} is missing from this "
            "installation; reinstall xpnet"
        )
    with importlib.resources.as_file(resource) as path:
        ds = load_npz(path)
    return replace(
        ds,
        name=SAMPLE_NAME,
        image_shape=(28, 28),
        source="bundled mnist-sample",
        class_names=MNIST_CLASSES,
    )


def build_mnist_sample(src_dir: str | os.PathLike, out_path: str | os.PathLike) -> Path:
    """Build the bundled sample ``.npz`` from the shared MNIST IDX files.

    Reads ``train-5k-{images,labels}`` and ``t10k-{images,labels}`` (``.gz``) from
    ``src_dir``, checks their md5s against :data:`SAMPLE_SOURCE_MD5`, and writes
    ``x_train (5000, 784)``, ``y_train (5000,)``, ``x_test (10000, 784)``,
    ``y_test (10000,)``, all uint8, with :func:`numpy.savez_compressed`, atomically.
    The order of the samples is kept as is: the 5k training labels are sorted by
    class, and shuffling is the trainer's job.

    Returns:
        ``out_path``.
    """
    src = Path(src_dir)
    for fname, expected in SAMPLE_SOURCE_MD5.items():
        got = md5sum(src / fname)
        if got != expected:
            raise DatasetError(
                f"{src / fname}: checksum mismatch (md5 {got}, expected {expected})"
            )
    x_train, _ = _read_images(src / "train-5k-images-idx3-ubyte.gz")
    x_test, _ = _read_images(src / "t10k-images-idx3-ubyte.gz")
    # Any: numpy's stubs would match ndarray values against savez's keywords.
    arrays: dict[str, Any] = {
        "x_train": x_train,
        "y_train": read_idx(src / "train-5k-labels-idx1-ubyte.gz"),
        "x_test": x_test,
        "y_test": read_idx(src / "t10k-labels-idx1-ubyte.gz"),
    }
    expected_shapes = {
        "x_train": (5000, 784),
        "y_train": (5000,),
        "x_test": (10000, 784),
        "y_test": (10000,),
    }
    for key, shape in expected_shapes.items():
        if arrays[key].shape != shape or arrays[key].dtype != np.uint8:
            raise DatasetError(
                f"{src}: {key} has shape {arrays[key].shape} {arrays[key].dtype}, "
                f"expected {shape} uint8"
            )
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out) as f:
        np.savez_compressed(f, **arrays)
    return out


# --------------------------------------------------------------------------- npz


def load_npz(path: str | os.PathLike) -> Dataset:
    """Load your own data from an ``.npz`` file (read with ``allow_pickle=False``).

    Required arrays: ``x_train`` ``(n_train, ...)`` numbers, ``y_train``
    ``(n_train,)`` integer labels >= 0, ``x_test`` ``(n_test, ...)`` with the same
    number of features, ``y_test`` ``(n_test,)``. Trailing sample dimensions are
    flattened, so ``(n, 28, 28)`` images become ``(n, 784)`` with
    ``image_shape=(28, 28)``. An optional ``class_names`` array of strings names the
    classes. ``num_classes`` is the largest label + 1, which may be at most
    :data:`MAX_CLASSES` and at most the number of samples (train + test).

    Raises:
        DatasetError: one line naming the file and the offending key.
    """
    where = str(path)
    arrays, names = _read_npz(Path(path), where)
    x_train, shape_train = _check_x(arrays["x_train"], where, "x_train")
    x_test, shape_test = _check_x(arrays["x_test"], where, "x_test")
    if x_train.shape[1] != x_test.shape[1]:
        raise DatasetError(
            f"{where}: x_train has {x_train.shape[1]} features per sample "
            f"{shape_train} but x_test has {x_test.shape[1]} {shape_test}"
        )
    y_train = _check_y(arrays["y_train"], len(x_train), where, "y_train")
    y_test = _check_y(arrays["y_test"], len(x_test), where, "y_test")
    num_classes = _check_num_classes(y_train, y_test, where)
    image_shape = shape_train if len(shape_train) == 2 else None
    if image_shape is not None and shape_test != shape_train:
        image_shape = None
    return Dataset(
        name=Path(path).stem,
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        num_classes=num_classes,
        image_shape=image_shape,
        source=where,
        class_names=_check_class_names(names, num_classes, where),
    )


def _read_npz(path: Path, where: str) -> tuple[dict[str, np.ndarray], object]:
    """The four required arrays (and ``class_names`` or None) of an .npz file.

    Headers are read before any data (see :mod:`xpnet.npz`), so a file cannot
    make us allocate more than it physically holds.
    """
    if not path.is_file():
        raise DatasetError(f"{where}: no such file")
    try:
        npz = NpzArchive(path)
    except NpzFormatError as e:
        raise DatasetError(f"{where}: not a readable .npz file ({e})") from None
    with npz:
        missing = [k for k in _NPZ_KEYS if k not in npz.headers]
        if missing:
            found = ", ".join([*npz.headers, *npz.others]) or "none"
            raise DatasetError(
                f"{where}: missing key {missing[0]!r} (needs x_train, y_train, "
                f"x_test, y_test, saved with np.savez; found: {found})"
            )
        arrays = {k: _npz_array(npz, k, where) for k in _NPZ_KEYS}
        names = (
            _npz_array(npz, "class_names", where)
            if "class_names" in npz.headers
            else None
        )
    return arrays, names


def _npz_array(npz: NpzArchive, key: str, where: str) -> np.ndarray:
    """One array from an open .npz; object arrays are refused (they need pickle)."""
    try:
        return npz.read(key)
    except NpzFormatError as e:
        raise DatasetError(f"{where}: cannot read key {key!r} ({e})") from None


def _check_x(x: np.ndarray, where: str, key: str) -> tuple[np.ndarray, tuple]:
    """Validate samples; return them as ``(n, n_features)`` and the sample shape."""
    if x.dtype.kind not in "uif":
        raise DatasetError(
            f"{where}: {key} has dtype {x.dtype}; expected integer or float numbers"
        )
    if x.ndim < 2:
        raise DatasetError(
            f"{where}: {key} has shape {x.shape}; expected one row per sample, "
            "(n, features) or (n, height, width)"
        )
    if len(x) == 0 or x[0].size == 0:
        raise DatasetError(f"{where}: {key} is empty (shape {x.shape})")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise DatasetError(f"{where}: {key} contains NaN or infinite values")
    # Device backends (CuPy) only take native byte order; .npz keeps the writer's.
    x = x.astype(x.dtype.newbyteorder("="), copy=False)
    return x.reshape(len(x), -1), tuple(int(d) for d in x.shape[1:])


def _check_y(y: np.ndarray, n: int, where: str, key: str) -> np.ndarray:
    """Validate labels for ``n`` samples; return them as ``(n,)`` int64."""
    if y.ndim != 1:
        raise DatasetError(
            f"{where}: {key} has shape {y.shape}; expected 1-D labels (n,), "
            "e.g. y.ravel() or y.argmax(axis=1) for one-hot labels"
        )
    if y.dtype.kind not in "iu":
        raise DatasetError(
            f"{where}: {key} has dtype {y.dtype}; expected integer class labels "
            "0, 1, 2, ..."
        )
    x_key = "x" + key[1:]
    if len(y) != n:
        raise DatasetError(f"{where}: {x_key} has {n} samples but {key} has {len(y)}")
    if y.min() < 0:
        raise DatasetError(
            f"{where}: {key} has negative labels (min {int(y.min())}); labels must be "
            "0, 1, ..., num_classes - 1"
        )
    # Checked before the int64 cast, which would wrap huge uint64 labels.
    if y.max() >= MAX_CLASSES:
        raise DatasetError(
            f"{where}: {key} has label {int(y.max())}, but at most {MAX_CLASSES:,} "
            f"classes are supported; {_RENUMBER_HINT}"
        )
    return y.astype(np.int64)


def _check_num_classes(y_train: np.ndarray, y_test: np.ndarray, where: str) -> int:
    """Largest label + 1, refused when most of those classes cannot have samples."""
    num_classes = int(max(y_train.max(), y_test.max())) + 1
    n = len(y_train) + len(y_test)
    if num_classes > n:
        raise DatasetError(
            f"{where}: the largest label is {num_classes - 1}, so the model would "
            f"get {num_classes:,} classes for only {n:,} samples; {_RENUMBER_HINT}"
        )
    return num_classes


def _check_class_names(
    names: object, num_classes: int, where: str
) -> tuple[str, ...] | None:
    """Optional ``class_names``: 1-D strings, at least one per class, or None."""
    if names is None:
        return None
    assert isinstance(names, np.ndarray)
    if names.ndim != 1 or names.dtype.kind not in "US":
        raise DatasetError(
            f"{where}: class_names must be a 1-D array of strings, got shape "
            f"{names.shape} {names.dtype}"
        )
    if len(names) < num_classes:
        raise DatasetError(
            f"{where}: class_names has {len(names)} names but the labels need "
            f"{num_classes}"
        )
    return tuple(str(n) for n in names)


# --------------------------------------------------------------------------- download


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
    timeout: float = 30.0,
    deadline: float = DOWNLOAD_DEADLINE,
    max_bytes: int | None = None,
    progress: bool = False,
    checksums: Mapping[str, str] | None = None,
) -> Path:
    """Make sure the four IDX files of ``name`` are in the cache, with good checksums.

    Files present with the right md5 are never downloaded again. A present file
    with the wrong md5 is downloaded again (a warning is logged). Arguments are as
    for :func:`load_dataset`.

    Returns:
        The dataset's directory, ``<data_dir>/<name>``.
    """
    key = _canonical_name(name)
    if key not in _REMOTE:
        raise DatasetError(
            f"no download for dataset {name!r}; downloadable: {', '.join(_REMOTE)}"
        )
    for what, value in (("timeout", timeout), ("deadline", deadline)):
        if not value > 0:
            raise DatasetError(f"{what} must be a positive number of seconds")
    if max_bytes is not None and not max_bytes > 0:
        raise DatasetError("max_bytes must be a positive number of bytes")
    spec = _REMOTE[key]
    md5 = dict(spec.md5 if checksums is None else checksums)
    if unknown := [f for f in IDX_FILES if f not in md5]:
        raise DatasetError(f"checksums= has no md5 for {', '.join(unknown)}")
    directory = dataset_dir(key, data_dir)
    urls = _mirror_list(mirrors, spec)
    missing = []
    for fname in IDX_FILES:
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
        limits = _Limits(
            timeout=timeout,
            deadline=deadline,
            max_bytes=(
                max_bytes
                if max_bytes is not None
                else int(spec.sizes[fname] * (1 + SIZE_MARGIN))
            ),
        )
        _download_from_mirrors(fname, directory, md5[fname], urls, limits, progress)
    if missing:
        what = "" if len(missing) == len(IDX_FILES) else f" ({', '.join(missing)})"
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


def _mirror_list(mirrors: Sequence[str] | None, spec: _RemoteSpec) -> list[str]:
    """Base URLs to try, in order: argument, then ``$XPNET_MIRRORS``, then built-in."""
    if mirrors is None:
        env = os.environ.get("XPNET_MIRRORS", "")
        mirrors = [m for m in (s.strip() for s in env.split(",")) if m] or None
    urls = list(spec.mirrors if mirrors is None else mirrors)
    if not urls:
        raise DatasetError("no download mirrors given (mirrors= is empty)")
    return urls


def _make_dir(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DatasetError(
            f"cannot create the data directory {directory} ({e.strerror or e}); set "
            "XPNET_DATA to a writable folder"
        ) from None
    _remove_stale_temp_files(directory)


def _remove_stale_temp_files(directory: Path, max_age_s: float = 3600.0) -> None:
    """Delete temp files left by downloads killed long ago (not ones in progress)."""
    cutoff = time.time() - max_age_s
    for tmp in directory.glob(".*.tmp"):
        try:
            if tmp.stat().st_mtime < cutoff:
                tmp.unlink()
        except OSError:
            pass  # another process may be cleaning up too


class _MirrorFailed(Exception):
    """One mirror could not deliver a good file; the message says why."""


@dataclass(frozen=True)
class _Limits:
    """How long and how much one file's download from one mirror may take.

    ``timeout``: seconds of silence per read; ``deadline``: seconds in all;
    ``max_bytes``: the most bytes accepted.
    """

    timeout: float
    deadline: float
    max_bytes: int


def _download_from_mirrors(
    fname: str,
    directory: Path,
    expected_md5: str,
    mirrors: Sequence[str],
    limits: _Limits,
    progress: bool,
) -> None:
    """Download ``fname`` into ``directory`` from the first mirror that works."""
    failures = []
    for base in mirrors:
        url = base.rstrip("/") + "/" + fname
        try:
            _download(url, directory / fname, expected_md5, limits, progress)
            return
        except _MirrorFailed as e:
            logger.info("download of %s failed: %s", url, e)
            failures.append(f"{url}: {e}")
    raise DatasetError(
        f"could not download {directory.name} file {fname} from any mirror "
        f"({'; '.join(failures)}); "
        f"{_where_to_put(directory)}"
    )


def _download(
    url: str, dest: Path, expected_md5: str, limits: _Limits, progress: bool
) -> None:
    """Stream ``url`` into a temp file beside ``dest``; keep it only if md5 matches.

    Raises:
        _MirrorFailed: HTTP error, timeout, deadline passed, too many bytes,
            dropped connection or bad checksum.
    """
    from xpnet import __version__

    agent = f"xpnet/{__version__}"
    request = urllib.request.Request(url, headers={"User-Agent": agent})
    timeout = max(min(limits.timeout, limits.deadline), 1e-3)
    end = time.monotonic() + limits.deadline
    try:
        with (
            atomic_write(dest) as f,
            urllib.request.urlopen(request, timeout=timeout) as response,
        ):
            total = _content_length(response)
            if total is not None and total > limits.max_bytes:
                raise _MirrorFailed(
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
                if received > limits.max_bytes:
                    raise _MirrorFailed(
                        f"it sent more than the {limits.max_bytes:,} bytes expected"
                    )
                if time.monotonic() > end:
                    raise _MirrorFailed(
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
                raise _MirrorFailed(
                    f"connection dropped after {received} of {total} bytes"
                )
            got = digest.hexdigest()
            if got != expected_md5:
                raise _MirrorFailed(
                    f"checksum mismatch (md5 {got}, expected {expected_md5})"
                )
    except urllib.error.HTTPError as e:
        e.close()
        raise _MirrorFailed(f"HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        raise _MirrorFailed(_reason(e.reason, timeout)) from None
    except TimeoutError:
        raise _MirrorFailed(f"timed out after {timeout:g} s") from None
    except http.client.HTTPException as e:
        raise _MirrorFailed(f"connection dropped ({type(e).__name__})") from None
    except (OSError, ValueError) as e:
        raise _MirrorFailed(_reason(e, timeout)) from None


def _reason(err: object, timeout: float) -> str:
    """One-line description of a network error."""
    if isinstance(err, TimeoutError):
        return f"timed out after {timeout:g} s"
    return " ".join(str(err).split()) or type(err).__name__


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
