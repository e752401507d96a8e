"""What the commands share: errors, output, facts, data loading."""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

import numpy as np

from ..backend import Backend, gpu_name
from ..datasets import Dataset
from ..errors import XpnetError
from ..preprocessing import Preprocessing
from ..terminal import printable


class UsageError(XpnetError):
    """A bad combination of command-line options."""


class CheckpointWriteError(XpnetError):
    """The checkpoint could not be written (read-only disk, disk full, ...)."""


class Exit(Exception):
    """Leave a command with this exit code; its message was already printed."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def say(args: argparse.Namespace, text: str) -> None:
    """Print one line of ``text`` unless --quiet (control characters from
    files' strings escaped: :func:`xpnet.terminal.printable`)."""
    if not getattr(args, "quiet", False):
        print(printable(text), flush=True)


def finite_or_none(value: Any) -> Any:
    """``value`` with every NaN/inf float replaced by None (strict JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_none(v) for v in value]
    if isinstance(value, np.generic):
        return finite_or_none(value.item())
    return value


def print_json(record: dict[str, Any]) -> None:
    """One line of strict JSON (no NaN/Infinity tokens) on stdout."""
    print(json.dumps(finite_or_none(record), allow_nan=False), flush=True)


def dataset_facts(data) -> dict[str, Any]:
    return {
        "name": data.name,
        "source": data.source,
        "n_train": int(len(data.x_train)),
        "n_test": int(len(data.x_test)),
        "n_features": data.n_features,
        "num_classes": int(data.num_classes),
        "image_shape": list(data.image_shape) if data.image_shape else None,
        "class_names": list(data.class_names) if data.class_names else None,
        **({"fingerprint": data.fingerprint} if data.fingerprint else {}),
    }


def device_facts(backend: Backend) -> dict[str, Any]:
    return {
        "backend": backend.name,
        "device": backend.device_name,
        "gpu": gpu_name(backend) or None,
    }


def check_features(model, data, where: str) -> None:
    if data.n_features != model.in_features:
        raise UsageError(
            f"{where} expects {model.in_features} features but dataset "
            f"{data.name!r} has {data.n_features}: use the dataset it was trained on"
        )


def load_training_data(
    name: str,
    data_dir: str | None,
    *,
    steps: Preprocessing | None = None,
    deskew: bool = False,
    standardize: bool = False,
    scale: bool | float | str = "auto",
    dtype: str = "float32",
    test_only: bool = False,
    held_out: tuple[float, int | None] | None = None,
    targets: str = "labels",
) -> Dataset:
    """The dataset ``name``, preprocessed: with recorded ``steps`` when given
    (a resumed or evaluated run), else by fitting the chosen steps.
    ``test_only``: only the test set is needed (see :func:`load_dataset`).
    ``held_out``: ``(fraction, seed)`` of the validation split that ``fit``
    will hold out (:func:`xpnet.rng.validation_split`); the fitted steps'
    statistics then come from the other training rows only. ``targets``:
    ``"values"`` for a regressor's float targets (see :func:`load_dataset`)."""
    from ..datasets import load_dataset
    from ..preprocessing import preprocess, replay, scale_divisor
    from ..rng import validation_split

    raw = load_dataset(
        name,
        data_dir,
        progress=sys.stderr.isatty(),
        test_only=test_only,
        targets=targets,
    )
    raw = with_fingerprint(name, raw)
    if steps is not None:
        return replay(raw, steps, dtype)
    if scale is False and scale_divisor(raw.x_train, raw.x_test) is None:
        kinds = sorted({str(raw.x_train.dtype), str(raw.x_test.dtype)})
        raise UsageError(
            f"--no-scale keeps the features as they are, and {raw.name}'s are "
            f"{' and '.join(kinds)}, which only --scale MAX would divide: "
            "drop --no-scale"
        )
    fit_rows = None
    if held_out is not None:
        y = np.asarray(raw.y_train)
        # Class labels stratify the split, as in fit's own split: 1-D integer
        # or boolean targets are labels (xpnet.inputs.prepare_targets).
        labels = y if y.dtype.kind in "iub" and y.ndim == 1 else None
        fit_rows, _ = validation_split(held_out[1], len(y), held_out[0], labels)
    return preprocess(
        raw,
        deskew=deskew,
        scale=scale,
        standardize=standardize,
        dtype=dtype,
        fit_rows=fit_rows,
    )


def targets_of(model: Any) -> str:
    """What a dataset's targets must be for ``model``: ``"values"`` (floats)
    for a regressor, else ``"labels"``."""
    return "values" if getattr(model, "task", None) == "regression" else "labels"


def scale_option(args: argparse.Namespace) -> bool | float | str:
    """What ``--scale MAX`` / ``--no-scale`` ask of the scaling (see
    :func:`xpnet.preprocessing.scale_divisor`): by default it is chosen from
    the data, uint8 pixels / 255 and anything else as it is."""
    if getattr(args, "scale", None) is not None:
        return float(args.scale)
    return False if args.no_scale else "auto"


def with_fingerprint(name: str, raw: Dataset) -> Dataset:
    """``raw`` with its content fingerprint when it is the user's own data
    (named datasets are verified by checksum, the sample ships inside)."""
    from dataclasses import replace

    from ..datasets import DATASET_NAMES, _canonical_name
    from ..fingerprint import fingerprint

    if _canonical_name(name) in DATASET_NAMES:
        return raw
    arrays = {
        "x_train": raw.x_train,
        "y_train": raw.y_train,
        "x_test": raw.x_test,
        "y_test": raw.y_test,
    }
    return replace(raw, fingerprint=fingerprint(arrays))


def end_bar_line() -> str:
    """A newline that ends a progress bar's line on a terminal, else nothing
    (a message after Ctrl-C stays one line in logs)."""
    return "\n" if sys.stderr.isatty() else ""
