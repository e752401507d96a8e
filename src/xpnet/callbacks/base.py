"""The callback seam of :func:`xpnet.training.fit`, as Keras users know it.

``fit(..., callbacks=[...])`` calls, on each :class:`Callback` in order:
``set_model(model)`` and ``set_params(params)`` once, ``on_train_begin``,
then per epoch ``on_epoch_begin(epoch)``, ``on_batch_end(batch, logs)`` after
each step, ``on_epoch_end(epoch, logs)`` and, after the last epoch,
``on_train_end``, and ``close()`` however fit ends (an exception
included). ``epoch`` counts from 1 over the model's life (resumed
training goes on counting), as the records and the command line do.

Nothing here reads the device on its own. ``on_batch_end`` is only called on
callbacks that override it, with a :class:`BatchLogs` whose
:meth:`~BatchLogs.metrics` is the one device read a callback may ask for
(a progress bar asks at most once per redraw). A callback that wants more
device values per epoch names them in :meth:`Callback.epoch_terms`; they are
read back with the epoch's own loss, in the same read.

A callback stops training by setting ``model.stop_training = True`` (after
the epoch, on every rank of a data-parallel run alike) and may give the
reason as ``model.stop_reason``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ..arraytypes import Array

if TYPE_CHECKING:
    from ..model import Sequential

__all__ = [
    "BatchLogs",
    "Callback",
    "CallbackList",
    "LambdaCallback",
    "checked_callbacks",
]


class Callback:
    """Base class: every hook does nothing.

    Attributes set by ``fit``: ``model``; ``params``, a dict with ``epochs``
    (the epoch the run ends at, counted like ``epoch``), ``initial_epoch``
    (epochs trained before this fit), ``samples`` (training rows per epoch),
    ``batch_size``, ``steps`` (updates per epoch), ``validation`` (whether
    ``val_loss`` is computed) and ``lead`` (whether this process writes files:
    False on ranks other than 0 of a data-parallel run).
    """

    model: Sequential
    params: dict[str, Any]

    def set_model(self, model: Sequential) -> None:
        self.model = model

    def set_params(self, params: dict[str, Any]) -> None:
        self.params = params

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        pass

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        pass

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        pass

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        pass

    def on_batch_end(self, batch: int, logs: BatchLogs) -> None:
        pass

    def close(self) -> None:
        """Release files and locks; called when ``fit`` ends however it ends
        (after ``on_train_end`` when it ends normally)."""

    def epoch_terms(self, outs: Array, targets: Array) -> list[Array]:
        """0-d device arrays to read back with this epoch's metrics, given the
        epoch's step outputs ``(rows, outputs)`` (each from before its update)
        and targets, this process's rows in the epoch's order."""
        return []

    def take_epoch_terms(self, values: list[float]) -> None:
        """The host values of :meth:`epoch_terms`, before ``on_epoch_end``."""

    # -- resuming ------------------------------------------------------------
    #: the key this callback's :meth:`state` is saved under (one per kind)
    state_key: str | None = None

    def state(self) -> dict[str, Any]:
        """What an exact resume needs (counters, best values): JSON-ready
        values, or host NumPy arrays for weights."""
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state` (before ``fit`` starts)."""


class BatchLogs:
    """What ``on_batch_end`` sees: ``done`` (samples of the epoch done, over
    all ranks), ``rows`` (this process's rows done) and :meth:`metrics`."""

    def __init__(self, metrics: Callable[[int], tuple[float, float | None]]) -> None:
        self._metrics = metrics
        self.done = 0
        self.rows = 0
        #: rows already counted by the last :meth:`metrics`
        self.counted = 0

    @property
    def fresh(self) -> bool:
        """Whether rows were stepped since the last :meth:`metrics`."""
        return self.rows > self.counted

    def metrics(self) -> tuple[float, float | None]:
        """``(mean loss, accuracy or None)`` of this process's rows so far in
        the epoch: one device read; call it at most a few times a second."""
        self.counted = self.rows
        return self._metrics(self.rows)


def _overrides(callback: Callback, name: str) -> bool:
    own = getattr(type(callback), name) is not getattr(Callback, name)
    return own or name in vars(callback)


class CallbackList:
    """The callbacks of one ``fit``, called in order; the per-batch and
    per-epoch-term hooks only on those that override them."""

    def __init__(
        self, callbacks: Iterable[Callback], model: Sequential, params: dict[str, Any]
    ) -> None:
        self.callbacks = list(callbacks)
        for callback in self.callbacks:
            if not isinstance(callback, Callback):
                from ..errors import XpnetError

                raise XpnetError(
                    f"callbacks must be xpnet.callbacks.Callback objects, got "
                    f"{callback!r}"
                )
            callback.set_model(model)
            callback.set_params(params)
        self.per_batch = [c for c in self.callbacks if _overrides(c, "on_batch_end")]
        self._with_terms = [c for c in self.callbacks if _overrides(c, "epoch_terms")]
        self._counts: list[int] = []

    def train_begin(self) -> None:
        for callback in self.callbacks:
            callback.on_train_begin({})

    def train_end(self, logs: dict[str, Any]) -> None:
        for callback in self.callbacks:
            callback.on_train_end(logs)

    def close(self) -> None:
        for callback in self.callbacks:
            callback.close()

    def epoch_begin(self, epoch: int) -> None:
        for callback in self.callbacks:
            callback.on_epoch_begin(epoch, {})

    def batch_end(self, batch: int, logs: BatchLogs) -> None:
        for callback in self.per_batch:
            callback.on_batch_end(batch, logs)

    def epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        for callback in self.callbacks:
            callback.on_epoch_end(epoch, logs)

    def epoch_terms(self, outs: Array, targets: Array) -> list[Array]:
        terms: list[Array] = []
        self._counts = []
        for callback in self._with_terms:
            mine = callback.epoch_terms(outs, targets)
            self._counts.append(len(mine))
            terms += mine
        return terms

    def take_epoch_terms(self, values: list[float]) -> None:
        at = 0
        for callback, count in zip(self._with_terms, self._counts, strict=True):
            callback.take_epoch_terms(values[at : at + count])
            at += count


class LambdaCallback(Callback):
    """A callback from plain functions: ``on_epoch_end(epoch, logs)``,
    ``on_batch_end(batch, logs)``, ``on_train_begin(logs)``,
    ``on_train_end(logs)``; each may be omitted."""

    def __init__(
        self,
        on_epoch_end: Callable[[int, dict[str, Any]], Any] | None = None,
        on_batch_end: Callable[[int, BatchLogs], Any] | None = None,
        on_train_begin: Callable[[dict[str, Any]], Any] | None = None,
        on_train_end: Callable[[dict[str, Any]], Any] | None = None,
    ) -> None:
        self._epoch_end = on_epoch_end
        self._train_begin = on_train_begin
        self._train_end = on_train_end
        if on_batch_end is not None:
            # Only then is it a per-batch callback (see CallbackList).
            self.on_batch_end = on_batch_end  # type: ignore[method-assign,assignment]

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        if self._epoch_end is not None:
            self._epoch_end(epoch, logs)

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        if self._train_begin is not None:
            self._train_begin(logs or {})

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if self._train_end is not None:
            self._train_end(logs or {})


def checked_callbacks(callbacks: Any) -> list[Callback]:
    """``fit``'s ``callbacks`` as a list: ``None``, one :class:`Callback`, or
    a list (any iterable but a string) of them; anything else is one
    :class:`~xpnet.errors.XpnetError` line, before any training."""
    from ..errors import XpnetError

    if callbacks is None:
        return []
    if isinstance(callbacks, Callback):
        return [callbacks]
    if isinstance(callbacks, str | bytes | dict) or not isinstance(callbacks, Iterable):
        raise XpnetError(
            f"callbacks must be a list of xpnet callbacks, got "
            f"{type(callbacks).__name__}: e.g. callbacks=[EarlyStopping()]"
        )
    given = list(callbacks)
    for item in given:
        if not isinstance(item, Callback):
            shown = type(item).__name__ if not isinstance(item, type) else item.__name__
            raise XpnetError(
                f"callbacks must be xpnet.callbacks.Callback objects, got {shown}"
                + (
                    f": create one, e.g. {item.__name__}()"
                    if isinstance(item, type) and issubclass(item, Callback)
                    else " (subclass xpnet.callbacks.Callback)"
                )
            )
    return given
