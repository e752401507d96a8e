"""Checkpoints: one ``.npz`` file (loadable with ``allow_pickle=False``).

Layout of the archive:

- ``param/<layer>.<name>``: model parameters, e.g. ``param/0.W: (784, 256)``;
- ``opt/slot<i>.<name>``: optimizer state (momentum, Adam moments);
- ``cb/<callback>.<name>``: callbacks' arrays (early stopping's best weights,
  flat);
- ``prep/mean``, ``prep/std``: standardisation statistics, when used;
- ``meta``: UTF-8 JSON as a uint8 array: format version, xpnet version,
  architecture, dtype, loss, optimizer (name, settings, schedule, update
  count, learning-rate factor), epochs trained, the shuffling RNG's state,
  the callbacks' counters (see :class:`xpnet.resumable.TrainingState`, the
  one definition of what resumes a run), dataset facts,
  preprocessing, history, and whether the run was interrupted.

A copy of the metadata is written beside it as ``<path>.json`` for people;
the archive is authoritative. Both are written to a temporary name and then
renamed, so an interrupted save never replaces a good file with a bad one.
A checkpoint saved on the GPU loads on the CPU: arrays are stored as host
NumPy arrays.

:class:`Checkpoint` is the typed record of one saved run (model, preprocessing,
training options, dataset identity, history) with :meth:`Checkpoint.to_file`
and :meth:`Checkpoint.from_file`; the command line only asks it.

Reading trusts nothing in the file (:func:`read_checkpoint`): the metadata's
types and required keys, then the stored arrays' shapes against the
architecture, are checked before any array data is read or any model built;
non-finite weights, optimizer state or statistics are refused. Every problem
is one :class:`CheckpointError` line (CLI exit status 2).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import __version__
from ..atomic import OutputError, atomic_write, write_target
from ..backend import Backend, resolve
from ..errors import XpnetError
from ..inputs import describe_inputs_seen
from ..model import Sequential
from ..preprocessing import Preprocessing
from ..resumable import TrainingState
from ..rng import MAX_SEED
from .format import (
    FORMAT,
    FORMAT_VERSION,
    CheckpointError,
    optimizer_config,
    optimizer_from_config,
)
from .validate import architecture_objects, read_checkpoint

if TYPE_CHECKING:
    from ..callbacks.base import Callback

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "Checkpoint",
    "CheckpointError",
    "SidecarWriteError",
    "load_checkpoint",
    "optimizer_config",
    "optimizer_from_config",
    "read_checkpoint",
    "checkpoint_name_problem",
    "save_checkpoint",
    "sidecar_path",
    "stated_preprocessing",
]


def checkpoint_name_problem(path: str | os.PathLike) -> str | None:
    """None when ``path`` names a checkpoint file (``<name>.npz``); else what
    is wrong with it, as a phrase that follows the path in a message."""
    name = Path(path).name
    if name == ".npz":
        # Path(".npz").suffix is "": the name is all suffix, no file name.
        return "has no file name before .npz: name the file, e.g. run.npz"
    if not name.endswith(".npz"):
        return "must end in .npz"
    return None


def sidecar_path(path: str | os.PathLike) -> Path:
    """The ``<checkpoint>.json`` copy of the metadata, beside the file the
    checkpoint is really written to (a symbolic link's target)."""
    target = write_target(path)
    return target.with_name(target.name + ".json")


class SidecarWriteError(CheckpointError):
    """The ``.npz`` was written but its ``.json`` copy was not: ``path`` holds
    the new checkpoint, ``sidecar`` (a copy for people) is out of date."""

    def __init__(self, path: Path, sidecar: Path, cause: BaseException) -> None:
        why = cause.strerror if isinstance(cause, OSError) and cause.strerror else cause
        self.path, self.sidecar, self.why = path, sidecar, str(why)
        super().__init__(
            f"{str(path)!r} was written, but its metadata copy {str(sidecar)!r} "
            f"was not ({self.why}): that copy is out of date; the .npz is what "
            "xpnet reads"
        )


@dataclass
class Checkpoint:
    """One saved run: the model and the record of how it was trained.

    Attributes:
        model: parameters, optimizer state, epochs trained and shuffling RNG.
        preprocessing: the steps that turn raw inputs into the model's inputs.
        options: the training options (the command line's, defaults resolved).
        dataset: the data's identity: ``name``, ``source``, ``n_train``,
            ``n_test``, ``n_features``, ``num_classes``, ``image_shape``,
            ``class_names``.
        history: one dict per epoch trained (``epoch``, ``loss``, ...).
        info: facts read from a file (``xpnet_version``, ``created``,
            ``saved_from``, ``format_version``); ignored when writing.
        callbacks: the run's callbacks whose state is saved with it (early
            stopping, plateau, best checkpoint), for an exact resume.
        callback_state: read from a file: ``state_key -> state`` of those
            callbacks, for :meth:`restore_callbacks`.
    """

    model: Sequential
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    options: dict[str, Any] = field(default_factory=dict)
    dataset: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    callbacks: list[Callback] = field(default_factory=list)
    callback_state: dict[str, dict[str, Any]] = field(default_factory=dict)

    def restore_callbacks(self, callbacks: list[Callback]) -> None:
        """Give ``callbacks`` the state saved for their kinds."""
        for callback in callbacks:
            saved = self.callback_state.get(callback.state_key or "")
            if saved is not None:
                callback.load_state(saved)

    def to_meta(self, state: TrainingState | None = None) -> dict[str, Any]:
        """The JSON metadata of the archive (``state``: the model's, taken
        now when not given)."""
        model = self.model
        if model.seed is not None and not 0 <= model.seed <= MAX_SEED:
            # The reader would call such a file damaged: never write one.
            raise CheckpointError(
                f"seed {model.seed} cannot be saved: a checkpoint records seeds "
                "from 0 to 2**128; train with a smaller seed"
            )
        state = state or TrainingState.of(model, self.callbacks)
        resumable = state.to_meta()
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "xpnet_version": __version__,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "architecture": model.config(),
            "seed": model.seed,
            "optimizer": {
                **optimizer_config(model.optimizer),
                "iterations": resumable["iterations"],
                "lr_factor": resumable["lr_factor"],
            },
            "epochs_trained": resumable["epochs_trained"],
            "rng_state": resumable["rng_state"],
            "callbacks": resumable["callbacks"],
            "saved_from": {
                "backend": model.backend.name,
                "device": model.backend.device_name,
            },
            "dataset": self.dataset,
            "train_options": self.options,
            "preprocessing": self.preprocessing.to_meta(),
            # A library model's own (xpnet.save, ModelCheckpoint) when the
            # record was given none: the command line gives its own rows.
            "history": self.history or model.epoch_history,
        }

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Every array of the archive (host NumPy), metadata included."""
        state = TrainingState.of(self.model, self.callbacks)
        arrays = state.to_arrays()
        for key, value in self.preprocessing.arrays().items():
            arrays[f"prep/{key}"] = np.asarray(value)
        text = json.dumps(self.to_meta(state), indent=1, default=_json_default)
        arrays["meta"] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
        return arrays

    def to_file(
        self,
        path: str | os.PathLike,
        *,
        exclusive: bool = False,
        before_replace: Callable[[int], None] | None = None,
    ) -> Path:
        """Write the archive, then its ``<path>.json`` copy, each atomically
        (see :func:`xpnet.atomic.atomic_write`: ``exclusive`` for a new file,
        which refuses to replace anything; a symbolic link is written through
        to its target, whose mode is kept; ``before_replace`` gets the
        archive's descriptor before it takes the name).

        Raises:
            CheckpointError: the path does not end in ``.npz``.
            SidecarWriteError: the archive was written, its copy was not.
            OSError, OutputError: the archive was not written.
        """
        path = Path(path)
        problem = checkpoint_name_problem(path)
        if problem:
            raise CheckpointError(f"checkpoint path {str(path)!r} {problem}")
        arrays = self.to_arrays()
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(
            path,
            exclusive=exclusive,
            follow_links=True,
            before_replace=before_replace,
        ) as handle:
            np.savez(handle, **arrays)  # type: ignore[arg-type]
        sidecar = sidecar_path(path)
        try:
            with atomic_write(sidecar, exclusive=exclusive, follow_links=True) as f:
                f.write(arrays["meta"].tobytes())
        except (OSError, OutputError) as exc:
            raise SidecarWriteError(path, sidecar, exc) from None
        return path

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike,
        device: str | Backend = "auto",
        backend: str | None = None,
    ) -> Checkpoint:
        """Validate and read ``path``, rebuilding the model on ``device``; the
        model continues training exactly where the saved one stopped."""
        meta, arrays = read_checkpoint(path)
        model = _rebuild_model(meta, arrays, str(path), resolve(device, backend))
        state = TrainingState.from_file_parts(_resumable_meta(meta), arrays)
        dataset = dict(meta.get("dataset", {}))
        shape = dataset.get("image_shape")
        prep = {
            k[len("prep/") :]: v for k, v in arrays.items() if k.startswith("prep/")
        }
        steps = Preprocessing.from_meta(
            _preprocessing_meta(meta), prep, tuple(shape) if shape else None
        )
        # How raw inputs become the model's, for xpnet.load's callers (and
        # kept by xpnet.save): None when nobody recorded it.
        model.preprocessing = steps if steps.known else None
        model.epoch_history = list(meta.get("history", []))
        return cls(
            model=model,
            preprocessing=steps,
            options=dict(meta.get("train_options", {})),
            dataset=dataset,
            history=list(meta.get("history", [])),
            info={
                key: meta[key]
                for key in ("format_version", "xpnet_version", "created", "saved_from")
                if key in meta
            },
            callback_state=state.callbacks,
        )


def _preprocessing_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """The preprocessing section of validated metadata. Files written before
    xpnet recorded whether it is known say nothing: those the command line
    wrote (with training options) or that name a step are known; a library
    save with no steps may have been fed scaled floats, so it is unknown."""
    prep = dict(meta.get("preprocessing", {}))
    if "known" not in prep and not meta.get("train_options"):
        if not (prep.get("scale") or prep.get("standardize") or prep.get("deskew")):
            prep.update(known=False, seen="inputs saved without their preparation")
    return prep


def stated_preprocessing(
    model: Sequential, preprocessing: Preprocessing | str | dict | None = None
) -> Preprocessing:
    """How raw inputs become ``model``'s inputs, for a save: what the caller
    states (a :class:`Preprocessing`, its fields as a dict, or ``"none"``
    for inputs used as they are), else the model's own
    (``model.preprocessing``, set by :func:`xpnet.load`), else what ``fit``
    saw: integer inputs (e.g. uint8 pixels) were used as they are; floats
    may have been scaled by the caller, so their preparation is unknown (and
    the command line will refuse to guess it)."""
    if isinstance(preprocessing, Preprocessing | dict):
        return _checked_steps(model, preprocessing)
    if isinstance(preprocessing, str):
        if preprocessing != "none":
            raise XpnetError(
                f"preprocessing={preprocessing!r}: give 'none' (inputs used as they "
                "are), an xpnet.Preprocessing, or its fields as a dict"
            )
        return Preprocessing()
    if preprocessing is not None:
        raise XpnetError(
            f"preprocessing must be an xpnet.Preprocessing, a dict or 'none', got "
            f"{type(preprocessing).__name__}"
        )
    own = getattr(model, "preprocessing", None)
    if isinstance(own, Preprocessing):
        return own
    seen = model.inputs_seen
    if seen is None:
        return Preprocessing.unknown("nothing: it was never fitted")
    if seen["integers"]:
        return Preprocessing()
    return Preprocessing.unknown(describe_inputs_seen(seen))


def _checked_steps(model: Sequential, given: Preprocessing | dict) -> Preprocessing:
    """A stated preprocessing, checked against the model before it is saved
    (a reader would refuse it later, as a damaged file)."""
    if isinstance(given, dict):
        try:
            given = Preprocessing(**given)
        except TypeError as exc:
            raise XpnetError(f"preprocessing={given!r}: {exc}") from None
    if given.scale is not None and not float(given.scale) > 0:
        raise XpnetError(f"preprocessing scale must be positive, got {given.scale}")
    if (given.mean is None) != (given.std is None):
        raise XpnetError("preprocessing needs both mean and std, or neither")
    for name, values in (("mean", given.mean), ("std", given.std)):
        if values is not None and np.shape(values) != (model.in_features,):
            raise XpnetError(
                f"preprocessing {name} has shape {np.shape(values)}; the model "
                f"has {model.in_features} inputs: give ({model.in_features},)"
            )
    if given.std is not None and not (np.asarray(given.std) > 0).all():
        raise XpnetError("preprocessing std must be positive (it is divided by)")
    return given


def save_checkpoint(
    path: str | os.PathLike,
    model: Sequential,
    extra: dict[str, Any] | None = None,
    preprocessing_arrays: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` to ``path``: :meth:`Checkpoint.to_file` for callers that
    hold a model and plain dicts. ``extra`` may hold ``dataset``,
    ``train_options``, ``preprocessing`` and ``history``;
    ``preprocessing_arrays`` the standardisation ``mean``/``std``. Without
    ``extra["preprocessing"]`` the preparation recorded is
    :func:`stated_preprocessing`'s (what ``fit`` saw)."""
    extra = extra or {}
    arrays = {k: v for k, v in (preprocessing_arrays or {}).items() if v is not None}
    steps = (
        Preprocessing.from_meta(extra["preprocessing"], arrays)
        if "preprocessing" in extra
        else stated_preprocessing(model)
    )
    return Checkpoint(
        model=model,
        preprocessing=steps,
        options=dict(extra.get("train_options", {})),
        dataset=dict(extra.get("dataset", {})),
        history=list(extra.get("history", [])),
    ).to_file(path)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _rebuild_model(
    meta: dict[str, Any], arrays: dict[str, np.ndarray], where: str, device: Backend
) -> Sequential:
    """The model of validated metadata and arrays, with its state restored."""
    arch = meta["architecture"]
    layers, loss, optimizer = architecture_objects(meta, where)
    try:
        model = Sequential(
            layers,
            loss=loss,
            optimizer=optimizer,
            device=device,
            dtype=arch["dtype"],
            seed=meta.get("seed"),
        )
    except XpnetError as exc:
        raise CheckpointError(
            f"checkpoint {where!r} has an unusable architecture: {exc}"
        ) from None
    try:
        TrainingState.from_file_parts(_resumable_meta(meta), arrays).restore(model)
        model.restore_task(arch)
    except XpnetError as exc:
        raise CheckpointError(f"checkpoint {where!r} is inconsistent: {exc}") from None
    # A file's weights may overflow: its answers are checked, never NaN.
    model.finite_outputs = True
    return model


def _resumable_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """The parts of a checkpoint's metadata that :class:`TrainingState`
    reads (see :meth:`TrainingState.to_meta`)."""
    return {
        "iterations": meta["optimizer"]["iterations"],
        "lr_factor": meta["optimizer"].get("lr_factor", 1.0),
        "rng_state": meta["rng_state"],
        "epochs_trained": meta.get("epochs_trained", 0),
        "callbacks": meta.get("callbacks", {}),
    }


def load_checkpoint(
    path: str | os.PathLike, device: str | Backend = "auto", backend: str | None = None
) -> tuple[Sequential, dict[str, Any]]:
    """``(model, metadata)`` of the checkpoint at ``path``, for callers that
    want the raw metadata (``metadata["preprocessing_arrays"]`` holds the
    ``prep/`` arrays); :meth:`Checkpoint.from_file` gives the typed record.
    Bad files raise :class:`CheckpointError` before anything is built."""
    meta, arrays = read_checkpoint(path)
    model = _rebuild_model(meta, arrays, str(path), resolve(device, backend))
    meta["preprocessing_arrays"] = {
        k[len("prep/") :]: v for k, v in arrays.items() if k.startswith("prep/")
    }
    return model, meta
