"""Datasets for xpnet: MNIST, Fashion-MNIST, a bundled MNIST sample, and your own .npz.

Everything here is host-side NumPy. :func:`load_dataset` returns a :class:`Dataset`
whose images are flattened to ``(n, 784)`` uint8 pixels (0-255) and whose labels are
``(n,)`` int64 class indices; :mod:`xpnet.preprocessing` turns that into floats.

MNIST and Fashion-MNIST are downloaded on first use into a cache directory (see
:func:`default_data_dir`), one sub-folder per dataset holding the four standard IDX
files, each checked against its published md5 checksum. The downloading (mirrors,
checksums, size and time limits) lives in :mod:`xpnet.download`; its public names
are importable from here too.

``mnist-sample`` ships inside the package (no network needed): 5,000 MNIST training
images (500 per class) and the official 10,000 test images.
:func:`choose_default_dataset` picks full MNIST when it is cached or downloadable,
else this sample, so the default run works offline.

Your own data: an ``.npz`` (:func:`load_npz`) or IDX files
(:mod:`xpnet.idx_dataset`).
"""

from __future__ import annotations

import importlib.resources
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from xpnet.atomic import atomic_write
from xpnet.download import (
    _REMOTE,
    DOWNLOAD_DEADLINE,
    FASHION_MNIST_MD5,
    FASHION_MNIST_SIZES,
    IDX_FILES,
    MNIST_MD5,
    MNIST_SIZES,
    DownloadFailed,
    fetch_dataset,
    md5sum,
    probe_mirrors,
)
from xpnet.errors import DatasetError
from xpnet.filekinds import not_a_file
from xpnet.idx import read_idx
from xpnet.npz import NpzArchive, NpzFormatError, NpzUnreadable

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
    "choose_default_dataset",
    "dataset_dir",
    "default_data_dir",
    "fetch_dataset",
    "load_dataset",
    "load_mnist_sample",
    "load_npz",
    "md5sum",
]

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
_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")

#: Most classes a bring-your-own dataset may have (labels 0 .. MAX_CLASSES - 1):
#: far beyond any MLP classifier's use, far below the memory a label of 10**9
#: would take as model outputs.
MAX_CLASSES = 2**16
_RENUMBER_HINT = (
    "labels must be 0, 1, ..., num_classes - 1 (renumber them with "
    "np.unique(y, return_inverse=True))"
)

#: Class names of the downloadable datasets (keys of ``xpnet.download._REMOTE``).
_CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "mnist": MNIST_CLASSES,
    "fashion-mnist": FASHION_MNIST_CLASSES,
}

#: Names accepted by :func:`load_dataset` besides a path to an .npz file.
DATASET_NAMES = ("mnist", "fashion-mnist", SAMPLE_NAME)
_ALIASES = {
    "fashion_mnist": "fashion-mnist",
    "fashionmnist": "fashion-mnist",
    "mnist_sample": SAMPLE_NAME,
}


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
    #: the raw arrays' :func:`xpnet.fingerprint.fingerprint` (bring-your-own
    #: data, as the command line loads it), or None
    fingerprint: dict[str, dict[str, Any]] | None = None

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
    timeout: float | None = None,
    deadline: float = DOWNLOAD_DEADLINE,
    max_bytes: int | None = None,
    progress: bool = False,
    checksums: Mapping[str, str] | None = None,
    test_only: bool = False,
    speed_limit: float | None = None,
    speed_time: float | None = None,
    targets: str = "labels",
) -> Dataset:
    """Load a dataset by name, downloading it into the cache on first use.

    Args:
        name: ``"mnist"``, ``"fashion-mnist"``, ``"mnist-sample"`` (bundled, offline),
            a path to an ``.npz`` file with arrays ``x_train, y_train, x_test,
            y_test`` (see :func:`load_npz`), or your own IDX files: a folder
            holding the four MNIST-named files, or ``IMAGES,LABELS`` (training set
            only) or ``IMAGES,LABELS,TEST_IMAGES,TEST_LABELS`` (see
            :func:`xpnet.idx_dataset.load_idx_files`).
        data_dir: cache root; default :func:`default_data_dir`. The dataset lives in
            ``<data_dir>/<name>/``.
        download: fetch missing or corrupt files; if False, only use the cache.
        mirrors: base URLs tried in order; default ``$XPNET_MIRRORS``
            (comma-separated) or the dataset's public mirrors.
        timeout: seconds the connection and the response headers may take in
            all before the next mirror is tried; default
            ``$XPNET_DOWNLOAD_TIMEOUT`` or 30.
        deadline: seconds one file's download from one mirror may take in all;
            then the next mirror is tried. Default 600.
        speed_limit, speed_time: a download averaging under ``speed_limit``
            bytes/s over ``speed_time`` seconds is abandoned for the next
            mirror, like ``curl --speed-limit --speed-time``; defaults
            ``$XPNET_DOWNLOAD_SPEED_LIMIT`` or 1024 and
            ``$XPNET_DOWNLOAD_SPEED_TIME`` or 30.
        max_bytes: the most bytes accepted for one file; default: its known
            size plus 10% (:data:`MNIST_SIZES`, :data:`FASHION_MNIST_SIZES`).
            A larger download is abandoned and the next mirror tried.
        progress: print download progress to stderr.
        checksums: md5 per file name, replacing the official ones (for tests and
            private mirrors of modified files).
        test_only: read (and download) only the test set, e.g. to evaluate;
            ``x_train``/``y_train`` may then be empty, ``(0, n_features)``.
        targets: ``"labels"`` (integer classes) or ``"values"`` (an ``.npz``'s
            float targets for a regressor, see :func:`load_npz`).

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
            files=IDX_FILES[2:] if test_only else IDX_FILES,
            speed_limit=speed_limit,
            speed_time=speed_time,
        )
        return _load_idx_dataset(key, directory, test_only)
    if not name.endswith(".npz") and ("," in name or Path(name).is_dir()):
        from xpnet.idx_dataset import load_idx_files

        return load_idx_files(name, test_only=test_only)
    if name.endswith(".npz") or Path(name).is_file():
        from xpnet.idx_dataset import refuse_single_idx_file

        refuse_single_idx_file(name)
        return load_npz(name, targets=targets)
    choices = ", ".join(DATASET_NAMES)
    raise DatasetError(
        f"unknown dataset {name!r}: choose one of {choices}, or give the path of an "
        ".npz file with arrays x_train, y_train, x_test, y_test, of a folder of IDX "
        "files, or IMAGES,LABELS IDX files"
    )


def choose_default_dataset(
    data_dir: str | os.PathLike | None = None,
    *,
    mirrors: Sequence[str] | None = None,
    probe_timeout: float = 3.0,
    progress: bool = False,
    checksums: Mapping[str, str] | None = None,
) -> tuple[str, str | None]:
    """The dataset to train on when none is named, and a notice if it is not MNIST.

    Full MNIST when its files are in the cache, or when a mirror answers within
    ``probe_timeout`` seconds and the download succeeds (it is then cached);
    else the bundled ``"mnist-sample"`` with a one-line notice saying why. So an
    offline machine trains at once instead of failing or waiting for timeouts:
    ``probe_timeout`` when nothing answers, and at most one stall (the download
    timeout or speed floor, 30 s by default) more when a mirror answers but
    does not deliver. ``mirrors``, ``progress`` and ``checksums`` are as for
    :func:`load_dataset`; unusable mirror settings fall back too.

    Returns:
        ``("mnist", None)`` or ``("mnist-sample", notice)``.
    """
    try:
        fetch_dataset("mnist", data_dir, download=False, checksums=checksums)
        return "mnist", None
    except DatasetError:
        pass  # not cached (or damaged): try the network
    try:
        reason = probe_mirrors("mnist", mirrors, timeout=probe_timeout)
        why = f"no download mirror answers ({reason})"
    except DatasetError as e:  # e.g. XPNET_MIRRORS is not a list of URLs
        reason, why = str(e), f"it cannot be downloaded ({e})"
    if reason is None:
        try:
            fetch_dataset(
                "mnist",
                data_dir,
                mirrors=mirrors,
                progress=progress,
                checksums=checksums,
                give_up_on_stall=True,
            )
            return "mnist", None
        except DownloadFailed as e:
            why = f"its download failed ({e.reason})"
        except DatasetError as e:
            why = f"its download failed ({e})"
    where = dataset_dir("mnist", data_dir)
    return SAMPLE_NAME, (
        f"dataset: MNIST is not cached in {where} and {why}; training on the "
        f"bundled {SAMPLE_NAME} (5,000 training images) instead; --dataset mnist "
        "insists on the full set"
    )


def _load_idx_dataset(key: str, directory: Path, test_only: bool = False) -> Dataset:
    """Read the verified IDX files of ``key`` from ``directory``: all four, or
    with ``test_only`` the test set alone (the training arrays then empty)."""
    train_x, train_y, test_x, test_y = (directory / f for f in IDX_FILES)
    x_test, image_shape = _read_images(test_x)
    y_test = _read_labels(test_y, len(x_test), test_x)
    if test_only:
        x_train, y_train = x_test[:0].copy(), y_test[:0].copy()
    else:
        x_train, _ = _read_images(train_x)
        y_train = _read_labels(train_y, len(x_train), train_x)
    classes = _CLASS_NAMES[key]
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


def load_npz(path: str | os.PathLike, *, targets: str = "labels") -> Dataset:
    """Load your own data from an ``.npz`` file (read with ``allow_pickle=False``).

    Required arrays: ``x_train`` ``(n_train, ...)`` numbers, ``y_train``
    ``(n_train,)`` integer labels >= 0, ``x_test`` ``(n_test, ...)`` with the same
    number of features, ``y_test`` ``(n_test,)``. Trailing sample dimensions are
    flattened, so ``(n, 28, 28)`` images become ``(n, 784)`` with
    ``image_shape=(28, 28)``. An optional ``class_names`` array of strings names the
    classes. ``num_classes`` is the largest label + 1, which may be at most
    :data:`MAX_CLASSES` and at most the number of samples (train + test).

    ``targets="values"``: the targets of a regressor instead, finite floats
    ``(n,)`` or ``(n, outputs)``; ``num_classes`` is then 0.

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
    if targets == "values":
        y_train = _check_values(arrays["y_train"], len(x_train), where, "y_train")
        y_test = _check_values(arrays["y_test"], len(x_test), where, "y_test")
        num_classes, names = 0, None
    else:
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
    problem = not_a_file(path)
    if problem is not None:
        raise DatasetError(
            f"{where}: no such file"
            if problem == "does not exist"
            else f"{where} {problem}"
        )
    try:
        npz = NpzArchive(path)
    except NpzUnreadable as e:
        raise DatasetError(f"{where}: cannot read it ({e})") from None
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


def _check_values(y: np.ndarray, n: int, where: str, key: str) -> np.ndarray:
    """Validate a regressor's targets for ``n`` samples: finite floats,
    ``(n,)`` or ``(n, outputs)``, returned in native byte order."""
    if y.dtype.kind != "f":
        raise DatasetError(
            f"{where}: {key} has dtype {y.dtype}; a regressor's targets are floats "
            "(save them with y.astype(np.float32))"
        )
    if y.ndim not in (1, 2):
        raise DatasetError(
            f"{where}: {key} has shape {y.shape}; expected (n,) or (n, outputs)"
        )
    if len(y) != n:
        x_key = "x" + key[1:]
        raise DatasetError(f"{where}: {x_key} has {n} samples but {key} has {len(y)}")
    if not np.isfinite(y).all():
        raise DatasetError(f"{where}: {key} contains NaN or infinite values")
    return y.astype(y.dtype.newbyteorder("="), copy=False)


def _check_num_classes(y_train: np.ndarray, y_test: np.ndarray, where: str) -> int:
    """Largest label + 1, refused when most of those classes cannot have samples.

    Either set may be empty (IDX training files without a test set)."""
    num_classes = max((int(y.max()) for y in (y_train, y_test) if len(y)), default=0)
    num_classes += 1
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
