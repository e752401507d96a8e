"""Decisions from a monitored value of the epoch records: stop early, or
lower the learning rate on a plateau (Keras's rules, names and defaults).

Both read ``logs[monitor]`` after each epoch, host floats that every rank of
a data-parallel run has alike (loss and validation are summed over the
ranks), and :func:`~xpnet.training.fit` agrees on their decisions through the
epoch's all-reduce, so every rank stops at the same epoch with the same
rates. Their counters, best value and (EarlyStopping) best weights are their
:meth:`state`, saved in checkpoints for an exact resume.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import XpnetError
from .base import Callback

__all__ = ["EarlyStopping", "ReduceLROnPlateau"]


class _Monitor(Callback):
    """A watched record value: ``monitor`` (e.g. ``"val_loss"``), ``mode``
    (``"min"``, ``"max"``, or ``"auto"``: max for accuracies, else min) and
    ``min_delta`` (the smallest change that counts as an improvement)."""

    def __init__(self, monitor: str, mode: str, min_delta: float) -> None:
        if mode not in ("auto", "min", "max"):
            raise XpnetError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
        if not math.isfinite(float(min_delta)) or float(min_delta) < 0:
            raise XpnetError(f"min_delta must be >= 0, got {min_delta!r}")
        self.monitor = monitor
        if mode == "auto":
            mode = "max" if "acc" in monitor else "min"
        self.mode = mode
        self.min_delta = float(min_delta)
        self.best = math.inf if mode == "min" else -math.inf

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        if self.monitor.startswith("val_") and not self.params.get("validation"):
            raise XpnetError(
                f"{type(self).__name__} monitors {self.monitor!r}, which needs "
                "validation data: pass validation_data or validation_split to "
                f"fit, or monitor={self.monitor[4:]!r}"
            )

    def value(self, logs: dict[str, Any]) -> float:
        value = logs.get(self.monitor)
        if value is None:
            known = ", ".join(k for k, v in logs.items() if isinstance(v, float))
            raise XpnetError(
                f"{type(self).__name__} monitors {self.monitor!r}, which the "
                f"epoch records do not have (they have {known})"
            )
        return float(value)

    def best_for_state(self) -> float | None:
        """:attr:`best` as JSON-ready data (``None`` before any value)."""
        return self.best if math.isfinite(self.best) else None

    def load_best(self, value: float | None) -> None:
        self.best = (
            float(value)
            if value is not None
            else (math.inf if self.mode == "min" else -math.inf)
        )

    def improves(self, value: float) -> bool:
        """Whether ``value`` beats :attr:`best` by more than ``min_delta``."""
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta


class EarlyStopping(_Monitor):
    """Stop training when ``monitor`` has stopped improving (Keras's rule).

    After each epoch past the first ``start_from_epoch`` (counted from the
    first epoch of the model), the value improves when it beats the best so
    far by more than ``min_delta``; after ``patience`` epochs in a row without
    improvement, training stops (``model.stop_training``, ``stop_reason``
    ``"early_stopping"``). With ``restore_best_weights`` the model gets the
    weights of the best epoch back when training stops (in
    ``on_train_end``: every other callback sees the last epoch's weights
    first, e.g. a checkpoint of the last epoch).

    Attributes: ``best``, ``best_epoch`` (0 before any), ``wait`` (epochs
    since the best), ``stopped_epoch`` (0 unless it stopped training). One
    instance follows one run: a second ``fit`` with it goes on counting (as a
    resumed run does); make a new one for a new run.
    """

    state_key = "early_stopping"

    def __init__(
        self,
        monitor: str = "val_loss",
        min_delta: float = 0.0,
        patience: int = 0,
        mode: str = "auto",
        restore_best_weights: bool = False,
        start_from_epoch: int = 0,
    ) -> None:
        super().__init__(monitor, mode, min_delta)
        for name, count in (
            ("patience", patience),
            ("start_from_epoch", start_from_epoch),
        ):
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise XpnetError(f"{name} must be an integer >= 0, got {count!r}")
        self.patience = patience
        self.restore_best_weights = bool(restore_best_weights)
        self.start_from_epoch = start_from_epoch
        self.wait = 0
        self.best_epoch = 0
        self.stopped_epoch = 0
        #: the best epoch's flat parameters, on the model's device
        self.best_weights: Any = None

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        if epoch <= self.start_from_epoch:
            return
        value = self.value(logs)
        self.wait += 1
        if self.improves(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                # A copy on the device: no read-back per improvement.
                flat = self.model.parameters.flat
                self.best_weights = self.model.xp.asarray(flat, copy=True)
            return
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            self.model.stop_training = True
            self.model.stop_reason = "early_stopping"

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        stopped = (logs or {}).get("stop_reason") == "early_stopping"
        if stopped and self.restore_best_weights and self.best_weights is not None:
            self.restore_best()

    def restore_best(self) -> None:
        """Put the best epoch's weights into the model."""
        params = self.model.parameters
        best = self.model.xp.asarray(self.best_weights, copy=True)
        if params.writeable:
            params.flat[...] = best
        else:
            params.replace(best)

    def state(self) -> dict[str, Any]:
        from ..backend import to_numpy

        out: dict[str, Any] = {
            "best": self.best_for_state(),
            "best_epoch": self.best_epoch,
            "wait": self.wait,
            "stopped_epoch": self.stopped_epoch,
        }
        if self.best_weights is not None:
            out["best_weights"] = to_numpy(self.best_weights, copy=True)
        return out

    def load_state(self, state: dict[str, Any]) -> None:
        self.load_best(state["best"])
        self.best_epoch = int(state["best_epoch"])
        self.wait = int(state["wait"])
        self.stopped_epoch = int(state.get("stopped_epoch", 0))
        weights = state.get("best_weights")
        self._pending = None if weights is None else np.asarray(weights)

    def set_model(self, model: Any) -> None:
        super().set_model(model)
        pending = getattr(self, "_pending", None)
        if pending is not None:
            self.best_weights = model.to_device(pending, model.dtype_name)
            self._pending = None


class ReduceLROnPlateau(_Monitor):
    """Multiply the learning rate by ``factor`` when ``monitor`` has not
    improved for ``patience`` epochs (Keras's rule and defaults).

    An improvement beats the best value by more than ``min_delta``; after a
    reduction ``cooldown`` epochs pass before counting starts again; the rate
    never goes below ``min_lr``. The rate is the optimizer's schedule times
    its ``lr_factor``, which this lowers (so it works on top of any
    schedule, warm-up included).
    """

    state_key = "reduce_lr_on_plateau"

    def __init__(
        self,
        monitor: str = "val_loss",
        factor: float = 0.1,
        patience: int = 10,
        min_delta: float = 1e-4,
        cooldown: int = 0,
        min_lr: float = 0.0,
        mode: str = "auto",
    ) -> None:
        super().__init__(monitor, mode, min_delta)
        if not 0 < float(factor) < 1:
            raise XpnetError(f"factor must be between 0 and 1, got {factor!r}")
        for name, count in (("patience", patience), ("cooldown", cooldown)):
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise XpnetError(f"{name} must be an integer >= 0, got {count!r}")
        if not math.isfinite(float(min_lr)) or float(min_lr) < 0:
            raise XpnetError(f"min_lr must be >= 0, got {min_lr!r}")
        self.factor, self.patience = float(factor), patience
        self.cooldown, self.min_lr = cooldown, float(min_lr)
        self.wait = 0
        self.cooldown_counter = 0

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        value = self.value(logs)
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if self.improves(value):
            self.best, self.wait = value, 0
            return
        if self.cooldown_counter > 0:
            return
        self.wait += 1
        if self.wait < self.patience:
            return
        optimizer = self.model.optimizer
        lr = optimizer.lr
        if lr > self.min_lr:
            if lr * self.factor >= self.min_lr:
                optimizer.lr_factor *= self.factor
            else:
                optimizer.lr_factor = self.min_lr / optimizer.schedule(
                    optimizer.iterations
                )
            self.cooldown_counter = self.cooldown
            self.wait = 0

    def state(self) -> dict[str, Any]:
        return {
            "best": self.best_for_state(),
            "wait": self.wait,
            "cooldown_counter": self.cooldown_counter,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.load_best(state["best"])
        self.wait = int(state["wait"])
        self.cooldown_counter = int(state["cooldown_counter"])
