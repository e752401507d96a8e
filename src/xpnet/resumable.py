"""A model's resumable state, defined once: what continues a run exactly.

:class:`TrainingState` holds the parameters, the optimizer's slots, update
count and learning-rate factor, the shuffling RNG, the epochs trained and the
state of the run's callbacks (early-stopping counters and best weights,
plateau counters, best checkpoint value), all on the host. Checkpoints
(:mod:`xpnet.checkpoint`), the scikit-learn wrapper's pickles and its
``warm_start`` take it with :meth:`TrainingState.of` and put it back with
:meth:`TrainingState.restore`; as a file it is JSON (:meth:`to_meta`) plus
NumPy arrays (:meth:`to_arrays`: ``param/<layer>.<name>``,
``opt/slot<i>.<name>``, ``cb/<callback>.<name>``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .backend import to_numpy

if TYPE_CHECKING:
    from .callbacks.base import Callback
    from .model import Sequential

__all__ = ["TrainingState"]


@dataclass
class TrainingState:
    """One run's resumable state, on the host (see the module docstring).

    ``params``: ``"<layer index>.<name>" -> array`` (:meth:`Sequential.
    state_dict`); ``slots``: ``"slot<i>.<name>" -> array`` (the optimizer's,
    empty before its first update); ``callbacks``: ``state_key -> state``
    (JSON-ready values, or host arrays for weights).
    """

    params: dict[str, np.ndarray]
    slots: dict[str, np.ndarray] = field(default_factory=dict)
    iterations: int = 0
    lr_factor: float = 1.0
    rng_state: dict[str, Any] = field(default_factory=dict)
    epochs_trained: int = 0
    callbacks: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def of(cls, model: Sequential, callbacks: Iterable[Callback] = ()) -> TrainingState:
        """The state of ``model`` and the run's ``callbacks`` now (copies)."""
        optimizer = model.optimizer
        slots = {
            key: to_numpy(value, copy=True)
            for key, value in optimizer.state(model.parameters).items()
            if key != "iterations"
        }
        return cls(
            params=model.state_dict(),
            slots=slots,
            iterations=optimizer.iterations,
            lr_factor=optimizer.lr_factor,
            rng_state=dict(model.shuffle_rng.bit_generator.state),
            epochs_trained=model.epochs_trained,
            callbacks={
                c.state_key: c.state() for c in callbacks if c.state_key is not None
            },
        )

    def restore(
        self,
        model: Sequential,
        callbacks: Iterable[Callback] = (),
        optimizer: bool = True,
    ) -> None:
        """Put this state into ``model`` and ``callbacks`` (of the same kinds
        as when taken; a callback with no saved state keeps its own).
        ``optimizer=False`` leaves the optimizer as it is (scikit-learn's
        ``warm_start`` starts it afresh)."""
        model.load_state_dict(self.params)
        if optimizer:
            state = {"iterations": self.iterations, **self.slots}
            model.optimizer.load_state(
                state, lambda a: model.to_device(a, model.dtype_name)
            )
            model.optimizer.lr_factor = float(self.lr_factor)
        model.shuffle_rng.bit_generator.state = self.rng_state
        model.epochs_trained = int(self.epochs_trained)
        for callback in callbacks:
            saved = self.callbacks.get(callback.state_key or "")
            if saved is not None:
                callback.load_state(saved)

    # -- as a file -------------------------------------------------------------
    def to_meta(self) -> dict[str, Any]:
        """The JSON part: counters, RNG, the callbacks' values (their arrays
        are in :meth:`to_arrays`)."""
        return {
            "iterations": self.iterations,
            "lr_factor": self.lr_factor,
            "rng_state": self.rng_state,
            "epochs_trained": self.epochs_trained,
            "callbacks": {
                key: {k: v for k, v in state.items() if not _is_array(v)}
                for key, state in self.callbacks.items()
            },
        }

    def to_arrays(self) -> dict[str, np.ndarray]:
        arrays = {f"param/{k}": v for k, v in self.params.items()}
        arrays.update((f"opt/{k}", v) for k, v in self.slots.items())
        for key, state in self.callbacks.items():
            for name, value in state.items():
                if _is_array(value):
                    arrays[f"cb/{key}.{name}"] = np.asarray(value)
        return arrays

    @classmethod
    def from_file_parts(
        cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]
    ) -> TrainingState:
        """The inverse of :meth:`to_meta` and :meth:`to_arrays` (validated
        data: see :func:`xpnet.checkpoint.read_checkpoint`)."""
        callbacks: dict[str, dict[str, Any]] = {
            key: dict(state) for key, state in meta.get("callbacks", {}).items()
        }
        for name, value in arrays.items():
            if name.startswith("cb/"):
                key, _, item = name[len("cb/") :].partition(".")
                callbacks.setdefault(key, {})[item] = value
        return cls(
            params=_under(arrays, "param/"),
            slots=_under(arrays, "opt/"),
            iterations=int(meta["iterations"]),
            lr_factor=float(meta.get("lr_factor", 1.0)),
            rng_state=meta["rng_state"],
            epochs_trained=int(meta.get("epochs_trained", 0)),
            callbacks=callbacks,
        )


def _is_array(value: Any) -> bool:
    return isinstance(value, np.ndarray)


def _under(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
