"""Reading a checkpoint file without trusting it.

:func:`read_checkpoint` checks the metadata's types and required keys, then
the stored arrays' shapes (from their headers) against the architecture,
before any array data is read or any model built, so a small file cannot make
xpnet allocate what its metadata claims; members the architecture does not
name are never read; parameters, optimizer state and
preprocessing statistics must be finite. Every problem is one
:class:`CheckpointError` line (CLI exit status 2).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..backend import DTYPES
from ..errors import XpnetError
from ..filekinds import not_a_file
from ..fingerprint import valid as fingerprint_valid
from ..layers import Dense, Layer
from ..losses import LOSSES, CrossEntropy, Loss
from ..model import layer_from_config
from ..npz import ArrayTooLarge, NpzArchive, NpzFormatError, NpzUnreadable
from ..optimizers import Optimizer
from ..rng import MAX_SEED
from .format import FORMAT, FORMAT_VERSION, CheckpointError, optimizer_from_config


def read_checkpoint(
    path: str | os.PathLike,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(metadata, arrays) of a checkpoint, validated; raises CheckpointError.

    Nothing in the file is trusted: the metadata's types and required keys,
    then the stored arrays' shapes (read from their headers) are checked
    against the architecture before any array data is read, so a small file
    cannot make us allocate what its metadata claims; parameters, optimizer
    state and preprocessing statistics must be finite.
    """
    path = Path(path)
    where = str(path)
    problem = not_a_file(path)  # a FIFO would block; /dev/null is no file
    if problem is not None:
        raise CheckpointError(f"checkpoint {where!r} {problem}")
    try:
        archive = NpzArchive(path)
    except NpzUnreadable as exc:
        raise CheckpointError(f"cannot read checkpoint {where!r} ({exc})") from None
    except NpzFormatError as exc:
        raise CheckpointError(
            f"checkpoint {where!r} is corrupt or not an xpnet .npz file ({exc}); "
            "save it again"
        ) from None
    with archive:
        meta = _read_meta(archive, where)
        _check_meta(meta, where)
        expected = _expected_shapes(meta, where)
        _check_shapes(archive, expected, where)
        arrays = {}
        # Only the members the architecture names: others are never read.
        for name in [n for n in archive.headers if n in expected]:
            try:
                arrays[name] = archive.read(name)
            except ArrayTooLarge as exc:
                raise CheckpointError(
                    f"checkpoint {where!r}: cannot read array {name!r} ({exc})"
                ) from None
            except NpzFormatError as exc:
                raise CheckpointError(
                    f"checkpoint {where!r}: cannot read array {name!r} ({exc}); "
                    "the file is damaged: save it again"
                ) from None
            if name.startswith(_CHECKED) and not np.isfinite(arrays[name]).all():
                raise CheckpointError(
                    f"checkpoint {where!r}: array {name!r} contains NaN or infinite "
                    "values (a diverged model); use an earlier checkpoint or retrain"
                )
            if name == "prep/std" and not (arrays[name] > 0).all():
                raise CheckpointError(
                    f"checkpoint {where!r}: array 'prep/std' has values <= 0, "
                    "which standardisation would divide by; save it again"
                )
    del arrays["meta"]
    return meta, arrays


# Arrays whose values are checked: they feed the model and its inputs.
_CHECKED = ("param/", "opt/", "prep/", "cb/")


# Generous: a million-epoch history is about 200 MB.
_MAX_META_BYTES = 256 << 20


_MAX_COUNT = 2**63 - 1  # what the counters may reach (int64 everywhere else)


def _bad(where: str, what: str) -> CheckpointError:
    return CheckpointError(
        f"checkpoint {where!r} has invalid metadata: {what}; the file is damaged "
        "or not written by xpnet: save it again"
    )


def _read_meta(archive: NpzArchive, where: str) -> dict[str, Any]:
    """The decoded JSON metadata; a dict with the xpnet format markers."""
    header = archive.headers.get("meta")
    if header is None:
        raise CheckpointError(
            f"{where!r} is an .npz file but not an xpnet checkpoint (no metadata)"
        )
    if header.dtype != np.uint8 or len(header.shape) != 1:
        raise _bad(where, f"meta is {header.shape} {header.dtype}, not UTF-8 bytes")
    if header.nbytes > _MAX_META_BYTES:
        raise _bad(where, f"meta is {header.nbytes:,} bytes long")
    try:
        text = archive.read("meta").tobytes().decode("utf-8")
        meta = json.loads(text)
    except ArrayTooLarge as exc:
        raise CheckpointError(
            f"checkpoint {where!r}: cannot read its metadata ({exc})"
        ) from None
    except NpzFormatError as exc:
        raise _bad(where, f"cannot read it ({exc})") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        # ValueError: bad JSON, or integers beyond Python's digit limit.
        raise CheckpointError(
            f"checkpoint {where!r} has corrupt metadata ({type(exc).__name__}: "
            f"{' '.join(str(exc).split())[:200]}); save it again"
        ) from None
    if not isinstance(meta, dict):
        raise _bad(where, f"it is a JSON {type(meta).__name__}, not an object")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{where!r} is not an xpnet checkpoint")
    version = meta.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise _bad(where, f"format_version is {_show(version)}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {where!r} has format version {version}; "
            f"this xpnet {__version__} reads up to {FORMAT_VERSION}: upgrade xpnet"
        )
    return meta


def _show(value: Any) -> str:
    """A short repr of a JSON value, for messages."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _get(
    obj: dict[str, Any], key: str, kind: type | tuple, where: str, path: str
) -> Any:
    """``obj[key]``, which must exist and be a ``kind``; else CheckpointError."""
    if key not in obj:
        raise _bad(where, f"{path}{key} is missing")
    value = obj[key]
    if isinstance(value, bool) and kind in (int, float):
        raise _bad(where, f"{path}{key} is {_show(value)}")
    if not isinstance(value, kind):
        raise _bad(where, f"{path}{key} is {_show(value)}")
    return value


def _nonfinite(value: Any, path: str) -> str | None:
    """The path of the first NaN/infinity in a JSON value, or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return path
    if isinstance(value, dict):
        items: list[tuple[Any, Any]] = list(value.items())
    elif isinstance(value, list):
        items = list(enumerate(value))
    else:
        return None
    for key, item in items:
        found = _nonfinite(item, f"{path}.{key}" if path else str(key))
        if found:
            return found
    return None


def _check_meta(meta: dict[str, Any], where: str) -> None:
    """Types and required keys of everything xpnet reads from the metadata."""
    # history only reports past epochs; a NaN there harms nothing.
    found = _nonfinite({k: v for k, v in meta.items() if k != "history"}, "")
    if found:
        raise _bad(where, f"{found} is not a finite number")
    arch = _get(meta, "architecture", dict, where, "")
    layers = _get(arch, "layers", list, where, "architecture.")
    if not layers or not all(isinstance(c, dict) for c in layers):
        raise _bad(where, "architecture.layers must be a non-empty list of objects")
    _get(arch, "loss", dict, where, "architecture.")
    dtype = _get(arch, "dtype", str, where, "architecture.")
    if dtype not in DTYPES:
        raise _bad(where, f"architecture.dtype is {_show(dtype)}")
    if "task" in arch and not isinstance(arch["task"], str | None):
        raise _bad(where, f"architecture.task is {_show(arch['task'])}")
    opt = _get(meta, "optimizer", dict, where, "")
    _get(opt, "name", str, where, "optimizer.")
    _get(opt, "config", dict, where, "optimizer.")
    _get(opt, "schedule", dict, where, "optimizer.")
    for key, obj, path in (
        ("iterations", opt, "optimizer."),
        ("epochs_trained", meta, ""),
    ):
        value = _get(obj, key, int, where, path)
        if not 0 <= value <= _MAX_COUNT:
            raise _bad(where, f"{path}{key} is {_show(value)}")
    seed = meta.get("seed")
    if seed is not None and not (_is_int(seed) and 0 <= seed <= MAX_SEED):
        raise _bad(where, f"seed is {_show(seed)}")
    factor = opt.get("lr_factor", 1.0)
    if not (_is_number(factor) and factor > 0):
        raise _bad(where, f"optimizer.lr_factor is {_show(factor)}")
    callbacks = meta.get("callbacks", {})
    if not isinstance(callbacks, dict) or not all(
        isinstance(v, dict) for v in callbacks.values()
    ):
        raise _bad(where, "callbacks must map names to objects")
    rng_state = _get(meta, "rng_state", dict, where, "")
    try:
        # The shuffling generator is a PCG64 (numpy.random.default_rng).
        np.random.PCG64().state = rng_state
    except (TypeError, ValueError, KeyError, OverflowError) as exc:
        raise _bad(where, f"rng_state is unusable ({type(exc).__name__})") from None
    _check_sections(meta, where)


def _check_sections(meta: dict[str, Any], where: str) -> None:
    """The optional sections the CLI reads: dataset, options, preprocessing."""
    sections: tuple[tuple[str, type], ...] = (
        ("dataset", dict),
        ("train_options", dict),
        ("preprocessing", dict),
        ("history", list),
        ("saved_from", dict),
    )
    for key, kind in sections:
        if key in meta and not isinstance(meta[key], kind):
            raise _bad(where, f"{key} is {_show(meta[key])}")
    if not all(isinstance(r, dict) for r in meta.get("history", [])):
        raise _bad(where, "history must be a list of objects")
    dataset = meta.get("dataset", {})
    if not isinstance(dataset.get("name", ""), str):
        raise _bad(where, f"dataset.name is {_show(dataset['name'])}")
    shape = dataset.get("image_shape")
    if shape is not None and not (
        isinstance(shape, list)
        and len(shape) == 2
        and all(_is_int(d) and 1 <= d <= 2**31 for d in shape)
    ):
        raise _bad(where, f"dataset.image_shape is {_show(shape)}")
    if "fingerprint" in dataset and not fingerprint_valid(dataset["fingerprint"]):
        raise _bad(where, "dataset.fingerprint is malformed")
    names = dataset.get("class_names")
    if names is not None and not (
        isinstance(names, list) and all(isinstance(n, str) for n in names)
    ):
        raise _bad(where, "dataset.class_names must be a list of strings")
    options = meta.get("train_options", {})
    # The types each recorded option may have are defined with the option.
    from ..cli.options import saved_types

    kinds = saved_types()
    for key, allowed in kinds.items():
        value = options.get(key)
        if key not in options:
            continue
        if (isinstance(value, bool) and bool not in allowed) or not isinstance(
            value, allowed
        ):
            raise _bad(where, f"train_options.{key} is {_show(value)}")
    if options.get("scale") is not None and not options["scale"] > 0:
        raise _bad(where, f"train_options.scale is {_show(options['scale'])}")
    if "batch_size" in options and options["batch_size"] < 1:
        raise _bad(where, f"train_options.batch_size is {options['batch_size']}")
    split = options.get("validation_split")
    if split is not None and not 0 < split < 1:
        raise _bad(where, f"train_options.validation_split is {_show(split)}")
    if "hidden" in options and not all(
        _is_int(h) and h >= 1 for h in options["hidden"]
    ):
        raise _bad(where, f"train_options.hidden is {_show(options['hidden'])}")
    prep = meta.get("preprocessing", {})
    for key in ("deskew", "standardize", "known"):
        if not isinstance(prep.get(key, False), bool):
            raise _bad(where, f"preprocessing.{key} is {_show(prep[key])}")
    if not isinstance(prep.get("seen", ""), str):
        raise _bad(where, f"preprocessing.seen is {_show(prep['seen'])}")
    scale = prep.get("scale")
    if scale is not None and not (_is_number(scale) and scale > 0):
        raise _bad(where, f"preprocessing.scale is {_show(scale)}")


def architecture_objects(
    meta: dict[str, Any], where: str
) -> tuple[list[Layer], Loss, Optimizer]:
    """Fresh (parameter-free) layers, loss and optimizer described by ``meta``;
    nothing here allocates arrays. Settings they refuse are a CheckpointError."""
    arch = meta["architecture"]
    try:
        layers = [layer_from_config(c) for c in arch["layers"]]
        loss_type = arch["loss"].get("type")
        loss_cls = next(c for c in LOSSES.values() if c.__name__ == loss_type)
        loss = loss_cls(**{k: v for k, v in arch["loss"].items() if k != "type"})
        optimizer = optimizer_from_config(meta["optimizer"])
    except StopIteration:
        raise _bad(where, f"unknown loss {_show(loss_type)}") from None
    except (XpnetError, KeyError, TypeError, ValueError, OverflowError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise _bad(where, f"unusable architecture or optimizer ({reason})") from None
    return layers, loss, optimizer


def _expected_shapes(
    meta: dict[str, Any], where: str
) -> dict[str, tuple[int, ...] | None]:
    """Array name -> the shape the architecture needs (``None``: any shape).

    Builds the layer, loss and optimizer objects (:func:`architecture_objects`)
    to validate their settings.
    """
    layers, loss, optimizer = architecture_objects(meta, where)
    for obj in (*layers, loss, optimizer, optimizer.schedule):
        for key, value in vars(obj).items():
            if isinstance(value, float) and not math.isfinite(value):
                raise _bad(where, f"{type(obj).__name__} {key} is {value}")
    dense = [(i, layer) for i, layer in enumerate(layers) if isinstance(layer, Dense)]
    if not dense:
        raise _bad(where, "the architecture has no Dense layer")
    for (_, a), (_, b) in zip(dense, dense[1:], strict=False):
        if a.out_features != b.in_features:
            raise _bad(
                where,
                f"layer sizes do not chain ({a.out_features} outputs feed "
                f"{b.in_features} inputs)",
            )
    params = []
    for i, layer in dense:
        params += [
            (f"{i}.W", (layer.in_features, layer.out_features)),
            (f"{i}.b", (layer.out_features,)),
        ]
    expected: dict[str, tuple | None] = {"meta": None}
    expected.update((f"param/{key}", shape) for key, shape in params)
    for j, (_, shape) in enumerate(params):
        for slot in optimizer.slot_names:
            expected[f"opt/slot{j}.{slot}"] = shape
    n_features = dense[0][1].in_features
    #: callbacks' arrays (best weights) are flat parameter vectors
    expected["cb/"] = (sum(math.prod(shape) for _, shape in params),)
    expected["prep/mean"] = expected["prep/std"] = (n_features,)
    dataset = meta.get("dataset", {})
    shape = dataset.get("image_shape")
    # Read images are resized to this shape: it must be the model's input.
    if shape and shape[0] * shape[1] != n_features:
        raise _bad(
            where,
            f"dataset.image_shape {shape} does not hold the model's "
            f"{n_features} inputs",
        )
    names = dataset.get("class_names")
    outputs = dense[-1][1].out_features
    _check_task(meta["architecture"], loss, outputs, where)
    if names is not None and len(names) != max(outputs, 2):
        raise _bad(
            where,
            f"dataset.class_names has {len(names)} names for a model with "
            f"{outputs} output{'s' * (outputs != 1)}",
        )
    return expected


def _check_task(arch: dict[str, Any], loss: Loss, outputs: int, where: str) -> None:
    """The recorded task must be one the loss and outputs can have (see
    :class:`~xpnet.model.Sequential`): cross-entropy always classifies, and
    1-D regression targets go with one output."""
    task, ndim = arch.get("task"), arch.get("target_ndim")
    if task == "regression" and isinstance(loss, CrossEntropy):
        raise _bad(
            where,
            "architecture.task is 'regression' but the loss is CrossEntropy, "
            "which always classifies",
        )
    if task == "regression" and ndim == 1 and outputs != 1:
        raise _bad(
            where,
            f"architecture.target_ndim is 1 (one value per sample) for a model "
            f"with {outputs} outputs",
        )


def _check_shapes(
    archive: NpzArchive, expected: dict[str, tuple | None], where: str
) -> None:
    """Stored arrays against the architecture, before reading their data."""
    headers = archive.headers
    known = ("param/", "opt/", "prep/")
    unexpected = sorted(n for n in headers if n.startswith(known) and n not in expected)
    flat = expected.pop("cb/", None)
    for name in headers:
        if name.startswith("cb/"):
            expected[name] = flat
    params = [n for n in expected if n.startswith("param/")]
    slots = [n for n in expected if n.startswith("opt/")]
    missing = [n for n in params if n not in headers]
    # No optimizer state at all is fine (saved before the first update).
    if any(n in headers for n in slots):
        missing += [n for n in slots if n not in headers]
    if ("prep/mean" in headers) != ("prep/std" in headers):
        missing += [n for n in ("prep/mean", "prep/std") if n not in headers]
    if unexpected or missing:
        raise CheckpointError(
            f"checkpoint {where!r} does not match its architecture: missing "
            f"{', '.join(missing) or 'nothing'}, unexpected "
            f"{', '.join(unexpected[:5]) or 'nothing'}; save it again"
        )
    for name, shape in expected.items():
        header = headers.get(name)
        if header is None or shape is None:
            continue
        if header.shape != shape or header.dtype.kind != "f":
            raise CheckpointError(
                f"checkpoint {where!r}: array {name!r} is {header.shape} "
                f"{header.dtype} but the architecture needs {shape} floats; the "
                "file is damaged or was edited: save it again"
            )
