"""Checkpoints: one ``.npz`` file (loadable with ``allow_pickle=False``).

Layout of the archive:

- ``param/<layer>.<name>``: model parameters, e.g. ``param/0.W: (784, 256)``;
- ``opt/slot<i>.<name>``: optimizer state (momentum, Adam moments);
- ``prep/mean``, ``prep/std``: standardisation statistics, when used;
- ``meta``: UTF-8 JSON as a uint8 array: format version, xpnet version,
  architecture, dtype, loss, optimizer (name, settings, schedule, update
  count), epochs trained, the shuffling RNG's state, dataset facts,
  preprocessing, history, and whether the run was interrupted.

A copy of the metadata is written beside it as ``<path>.json`` for people;
the archive is authoritative. Both are written to a temporary name and then
renamed, so an interrupted save never replaces a good file with a bad one.
A checkpoint saved on the GPU loads on the CPU: arrays are stored as host
NumPy arrays.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .backend import Backend, resolve, to_numpy
from .errors import XpnetError
from .idx import atomic_write
from .losses import LOSSES
from .model import Sequential, layer_from_config
from .optimizers import OPTIMIZERS, Optimizer
from .schedules import schedule_from_config, schedule_name

FORMAT = "xpnet-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(XpnetError):
    """A checkpoint cannot be read or does not fit; the message is one line."""


def optimizer_config(optimizer: Optimizer) -> dict[str, Any]:
    """Name, settings and schedule of an optimizer, as JSON-ready data."""
    name = next((k for k, cls in OPTIMIZERS.items() if type(optimizer) is cls), None)
    if name is None:
        raise CheckpointError(
            f"optimizer {type(optimizer).__name__} cannot be saved by name"
        )
    return {
        "name": name,
        "config": optimizer.config(),
        "schedule": {
            "name": schedule_name(optimizer.schedule),
            **optimizer.schedule.config(),
        },
    }


def optimizer_from_config(config: dict[str, Any]) -> Optimizer:
    cls = OPTIMIZERS[config["name"]]
    return cls(lr=schedule_from_config(config["schedule"]), **config["config"])


def save_checkpoint(
    path: str | os.PathLike,
    model: Sequential,
    extra: dict[str, Any] | None = None,
    preprocessing_arrays: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` (parameters, optimizer state, RNG state) to ``path``.

    ``extra``: more JSON-ready metadata (dataset facts, history, ...).
    ``preprocessing_arrays``: host arrays such as the standardisation
    ``mean``/``std``, stored as ``prep/<name>``.
    """
    path = Path(path)
    if path.suffix != ".npz":
        raise CheckpointError(f"checkpoint path {str(path)!r} must end in .npz")
    arrays: dict[str, np.ndarray] = {
        f"param/{k}": v for k, v in model.state_dict().items()
    }
    opt_state = model.optimizer.state()
    for key, value in opt_state.items():
        if key != "iterations":
            arrays[f"opt/{key}"] = to_numpy(value, copy=True)
    for key, value in (preprocessing_arrays or {}).items():
        if value is not None:
            arrays[f"prep/{key}"] = np.asarray(value)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "xpnet_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "architecture": model.config(),
        "seed": model.seed,
        "optimizer": {
            **optimizer_config(model.optimizer),
            "iterations": model.optimizer.iterations,
        },
        "epochs_trained": model.epochs_trained,
        "rng_state": model.shuffle_rng.bit_generator.state,
        "saved_from": {
            "backend": model.backend.name,
            "device": model.backend.device_name,
        },
        **(extra or {}),
    }
    text = json.dumps(meta, indent=1, default=_json_default)
    arrays["meta"] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as handle:
        np.savez(handle, **arrays)
    with atomic_write(path.with_name(path.name + ".json")) as handle:
        handle.write(text.encode("utf-8"))
    return path


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def read_checkpoint(
    path: str | os.PathLike,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(metadata, arrays) of a checkpoint, validated; raises CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is corrupt or not an xpnet .npz file "
            f"({type(exc).__name__}: {exc}); save it again"
        ) from None
    if "meta" not in arrays:
        raise CheckpointError(
            f"{str(path)!r} is an .npz file but not an xpnet checkpoint (no metadata)"
        )
    try:
        meta = json.loads(arrays.pop("meta").tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(
            f"checkpoint {str(path)!r} has corrupt metadata ({exc})"
        ) from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{str(path)!r} is not an xpnet checkpoint")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {str(path)!r} has format version {meta['format_version']}; "
            f"this xpnet {__version__} reads up to {FORMAT_VERSION}: upgrade xpnet"
        )
    return meta, arrays


def load_checkpoint(
    path: str | os.PathLike, device: str | Backend = "auto", backend: str | None = None
) -> tuple[Sequential, dict[str, Any]]:
    """Rebuild the model saved at ``path`` on ``device`` and restore its state.

    Returns ``(model, metadata)``; the model continues training exactly where
    the saved one stopped (same optimizer state and shuffling RNG).
    """
    meta, arrays = read_checkpoint(path)
    where = str(path)
    try:
        arch = meta["architecture"]
        layers = [layer_from_config(c) for c in arch["layers"]]
        loss_config = dict(arch["loss"])
        loss_type = loss_config.pop("type")
        loss_cls = next(c for c in LOSSES.values() if c.__name__ == loss_type)
        optimizer = optimizer_from_config(meta["optimizer"])
    except (KeyError, TypeError, StopIteration) as exc:
        raise CheckpointError(
            f"checkpoint {where!r} has an unreadable architecture ({exc!r})"
        ) from None
    model = Sequential(
        layers,
        loss=loss_cls(**loss_config),
        optimizer=optimizer,
        device=resolve(device, backend),
        dtype=arch["dtype"],
        seed=meta.get("seed"),
    )
    params = {
        k[len("param/") :]: v for k, v in arrays.items() if k.startswith("param/")
    }
    try:
        model.load_state_dict(params)
        model._restore_task(arch)
    except XpnetError as exc:
        raise CheckpointError(f"checkpoint {where!r} is inconsistent: {exc}") from None
    opt = {k[len("opt/") :]: v for k, v in arrays.items() if k.startswith("opt/")}
    opt["iterations"] = meta["optimizer"]["iterations"]
    model.optimizer.load_state(opt, lambda a: model.to_device(a, model.dtype_name))
    model.epochs_trained = int(meta.get("epochs_trained", 0))
    model.shuffle_rng.bit_generator.state = meta["rng_state"]
    meta["preprocessing_arrays"] = {
        k[len("prep/") :]: v for k, v in arrays.items() if k.startswith("prep/")
    }
    return model, meta
