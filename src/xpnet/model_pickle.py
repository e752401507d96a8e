"""Pickling and deep-copying a :class:`~xpnet.model.Sequential`.

A model holds its Array API namespace (a module, which pickle refuses) and
parameter views into one flat buffer (which pickle would copy apart), so it is
never pickled as it is. :func:`reduce_model` turns it into host data instead:
what a checkpoint holds (architecture, optimizer settings, the
:class:`~xpnet.resumable.TrainingState`) plus the backend's name and device;
:func:`rebuild_model` builds a fresh model from them, re-resolving the
namespace by that name and device (:func:`xpnet.backend.restore_backend`), so
the copy gives the same numbers and trains on exactly as the original would.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

from .backend import Backend, backend_identity, resolve, restore_backend
from .errors import DeviceError, XpnetError
from .resumable import TrainingState

if TYPE_CHECKING:
    from .model import Sequential

#: bumped when the pickled layout changes
PICKLE_VERSION = 1

#: plain attributes carried over as they are (host values only)
_PLAIN = (
    "seed",
    "stop_training",
    "stop_reason",
    "finite_outputs",
    "inputs_seen",
    "preprocessing",
    "epoch_history",
)


def reduce_model(model: Sequential) -> tuple[Any, tuple[dict[str, Any]]]:
    """``model.__reduce__``: :func:`rebuild_model` and the model's host state."""
    from .checkpoint.format import CheckpointError, optimizer_config

    try:
        optimizer = optimizer_config(model.optimizer)
    except CheckpointError as exc:
        raise XpnetError(f"cannot pickle or copy this model: {exc}") from None
    state = {
        "version": PICKLE_VERSION,
        "backend": backend_identity(model.backend),
        "architecture": model.config(),
        "optimizer": optimizer,
        "training": TrainingState.of(model),
        "init_rng": dict(model._init_rng.bit_generator.state),
        **{name: getattr(model, name) for name in _PLAIN},
    }
    return rebuild_model, (state,)


def rebuild_model(state: dict[str, Any]) -> Sequential:
    """The model that :func:`reduce_model` described, on the same backend and
    device (on the CPU, with a warning, when that device is not usable here)."""
    from .checkpoint.validate import architecture_objects
    from .model import Sequential

    if state.get("version") != PICKLE_VERSION:
        raise XpnetError(
            f"this pickled xpnet model has layout {state.get('version')!r}; this "
            f"xpnet reads layout {PICKLE_VERSION}: save models with xpnet.save to "
            "move them between versions"
        )
    try:
        backend = restore_backend(*state["backend"])
    except DeviceError as exc:
        backend = _cpu_instead(state["backend"][0], str(exc))
    layers, loss, optimizer = architecture_objects(state, "the pickled model")
    arch = state["architecture"]
    model = Sequential(
        layers,
        loss=loss,
        optimizer=optimizer,
        device=backend,
        dtype=arch["dtype"],
        seed=state["seed"],
    )
    state["training"].restore(model)
    model.restore_task(arch)
    model._init_rng.bit_generator.state = state["init_rng"]
    for name in _PLAIN:
        setattr(model, name, state[name])
    return model


def _cpu_instead(name: str, why: str) -> Backend:
    """The CPU backend a model pickled on an unusable device loads on: its
    own backend's CPU side where it has one (torch), else NumPy; warned."""
    try:
        backend = resolve(
            "cpu", name if name in ("torch", "array-api-strict") else "numpy"
        )
    except DeviceError:
        backend = resolve("cpu", "numpy")
    warnings.warn(
        f"the pickled model's device is not usable here ({why}); running on "
        f"the CPU with {backend.name}",
        stacklevel=3,
    )
    return backend
