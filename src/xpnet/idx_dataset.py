"""Your own IDX files as a :class:`~xpnet.datasets.Dataset` (host NumPy only).

Two ways to name them (``xpnet train --dataset ...`` or
:func:`xpnet.datasets.load_dataset`):

- a folder holding the four files under MNIST's names,
  ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
  ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each optionally
  ``.gz`` (the ``train-images.idx3-ubyte`` spelling of some copies works too);
- comma-separated files: ``IMAGES,LABELS`` (a training set without a test set)
  or ``IMAGES,LABELS,TEST_IMAGES,TEST_LABELS``.

Images are any numeric IDX array with one row per sample, ``(n, h, w)`` or
``(n, features)``; labels are ``(n,)`` integers ``0 .. num_classes - 1``. The
checks and messages are those of :func:`xpnet.datasets.load_npz`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from xpnet.datasets import Dataset, _check_num_classes, _check_x, _check_y
from xpnet.download import IDX_FILES
from xpnet.errors import DatasetError
from xpnet.idx import read_idx

__all__ = ["find_idx_files", "load_idx_files", "refuse_single_idx_file"]

#: The stems of MNIST's four files: train images, train labels, test images,
#: test labels.
MNIST_STEMS = tuple(name.removesuffix(".gz") for name in IDX_FILES)

_FORMS = (
    "a folder holding train-images-idx3-ubyte, train-labels-idx1-ubyte, "
    "t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (each optionally .gz), "
    "or IMAGES,LABELS[,TEST_IMAGES,TEST_LABELS]"
)


def load_idx_files(spec: str, *, test_only: bool = False) -> Dataset:
    """The dataset in a folder of MNIST-named IDX files, or in ``IMAGES,LABELS``
    or ``IMAGES,LABELS,TEST_IMAGES,TEST_LABELS`` (comma-separated paths).

    ``x_*`` are ``(n, features)`` in the files' own dtype (uint8 pixels for
    MNIST-like images), ``y_*`` ``(n,)`` int64. Without test files the test
    arrays are empty, ``(0, features)``. ``test_only``: read only the test files
    (a folder then needs only those; the training arrays are empty); refused
    when there are none.

    Raises:
        DatasetError or IdxError: one line naming the file and the problem.
    """
    train, test = find_idx_files(spec, test_only=test_only)
    if test_only and not test:
        raise DatasetError(
            f"{spec}: these IDX files hold no test set; pass the test files too, "
            "as IMAGES,LABELS,TEST_IMAGES,TEST_LABELS or a folder"
        )
    first = test if test_only else train
    x, y, shape = _read_pair(*first)
    empty = x[:0], y[:0]
    if test_only:
        (x_train, y_train), (x_test, y_test) = empty, (x, y)
    else:
        (x_train, y_train), (x_test, y_test) = (x, y), empty
    if test and not test_only:
        x_test, y_test, shape_test = _read_pair(*test)
        if x_test.shape[1] != x_train.shape[1]:
            raise DatasetError(
                f"{train[0]} has {x_train.shape[1]} features per sample {shape} "
                f"but {test[0]} has {x_test.shape[1]} {shape_test}"
            )
    folder = Path(spec)
    name = folder.resolve().name if folder.is_dir() else _stem(first[0])
    return Dataset(
        name=name,
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        num_classes=_check_num_classes(y_train, y_test, spec),
        image_shape=shape if len(shape) == 2 else None,
        source=spec,
    )


def find_idx_files(spec: str, test_only: bool = False) -> tuple[list[Path], list[Path]]:
    """``([train images, labels], [test images, labels] or [])`` named by
    ``spec``; with ``test_only`` a folder needs (and gives) only the test pair."""
    folder = Path(spec)
    if "," not in spec and folder.is_dir():
        stems = MNIST_STEMS[2:] if test_only else MNIST_STEMS
        found = []
        for stem in stems:
            path = _find_in(folder, stem)
            if path is None:
                raise DatasetError(
                    f"{spec}: no {' or '.join(_spellings(stem))} (.gz or not) in "
                    f"this folder; expected {_FORMS}"
                )
            found.append(path)
        return ([], found) if test_only else (found[:2], found[2:])
    names = [p.strip() for p in spec.split(",")]
    if len(names) not in (2, 4) or not all(names):
        raise DatasetError(
            f"{spec!r}: expected 2 or 4 comma-separated IDX files, got "
            f"{len(names)}; give {_FORMS}"
        )
    parts = [Path(p) for p in names]
    for path in parts[2:] if test_only else parts:
        if not path.is_file():
            raise DatasetError(f"{path}: no such file (in --dataset {spec})")
    return parts[:2], parts[2:]


def refuse_single_idx_file(name: str) -> None:
    """One IDX file where a dataset was expected: say how to name its labels."""
    path = Path(name)
    if name.endswith(".npz") or not path.is_file():
        return
    with open(path, "rb") as f:
        head = f.read(2)
    named_idx = "idx" in path.name or "ubyte" in path.name
    if head == b"\x00\x00" or (head == b"\x1f\x8b" and named_idx):
        raise DatasetError(
            f"{name} is a single IDX file: name its labels too, as IMAGES,LABELS "
            f"(comma-separated), or give {_FORMS}"
        )


def _read_pair(images: Path, labels: Path) -> tuple[np.ndarray, np.ndarray, tuple]:
    """``(x (n, features), y (n,) int64, sample shape)`` from two IDX files."""
    x, shape = _check_x(read_idx(images), str(images), "images")
    y = read_idx(labels)
    if y.ndim == 1 and len(y) != len(x):
        raise DatasetError(
            f"{labels}: {len(y):,} labels but {images.name} has {len(x):,} images "
            "(files from different sets?)"
        )
    return x, _check_y(y, len(x), str(labels), "labels"), shape


def _find_in(folder: Path, stem: str) -> Path | None:
    for spelling in _spellings(stem):
        for candidate in (folder / spelling, folder / f"{spelling}.gz"):
            if candidate.is_file():
                return candidate
    return None


def _spellings(stem: str) -> tuple[str, str]:
    """``train-images-idx3-ubyte`` and ``train-images.idx3-ubyte``."""
    head, _, tail = stem.rpartition("-idx")
    return stem, f"{head}.idx{tail}"


def _stem(path: Path) -> str:
    return Path(path.name.removesuffix(".gz")).stem
