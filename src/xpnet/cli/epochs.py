"""What ``xpnet train`` does after each epoch, as :mod:`xpnet.callbacks`:
the test report, the ``--save`` checkpoint, the epoch's line and the live
``--plot``; :class:`SignalsWait` holds Ctrl-C and SIGTERM back while the
test report and the saves run, so the epoch just trained is not lost."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..callbacks import Callback
from ..epoch_history import history_row
from ..progress import epoch_line

if TYPE_CHECKING:
    from ..distributed.communicator import Communicator
    from .plot import LivePlot

__all__ = ["EpochLine", "LivePlotting", "SaveLast", "SignalsWait", "TestReport"]


class TestReport(Callback):
    """Adds ``test_loss`` and ``test_accuracy`` to each epoch's record. The
    test set is only reported: no choice made in training sees it. A NaN or
    infinite test loss is a divergence (the epoch is not saved)."""

    def __init__(self, x_test: Any, y_test: Any, comm: Communicator | None) -> None:
        self.raw = (x_test, y_test)
        self.comm = comm
        self.test: tuple[Any, Any, Any] | None = None

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        from ..distributed.data_parallel import evaluate_sharded
        from ..divergence import divergence

        model = self.model
        if self.test is None:
            x_test = model.prepare_inputs(self.raw[0], "test X")
            y_test, labels, _ = model.prepare_targets(
                self.raw[1], x_test.shape[0], "test y", task=model.task
            )
            self.test = (x_test, y_test, labels)
        if self.comm is not None:
            scores = evaluate_sharded(model, self.comm, *self.test, 1024)
        else:
            scores = model.evaluate_prepared(*self.test)
        if not math.isfinite(scores["loss"]):
            raise divergence(model, f"the test loss is {scores['loss']}")
        logs["test_loss"], logs["test_accuracy"] = scores["loss"], scores["accuracy"]


class SaveLast(Callback):
    """Each epoch's history row kept (``rows``: this run's; ``history``: the
    whole run's, resumed epochs included) and ``save()`` called: the
    ``--save`` checkpoint, which always holds the last trained epoch."""

    def __init__(
        self,
        rows: list[dict[str, Any]],
        history: list[dict[str, Any]],
        save: Callable[[], None],
    ) -> None:
        self.rows, self.history, self.save = rows, history, save

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        row = history_row(logs)
        self.rows.append(row)
        self.history.append(row)
        self.save()


class EpochLine(Callback):
    """The epoch's line on stdout (not with ``--quiet``)."""

    def __init__(self, say: Callable[[str], None], total_epochs: int) -> None:
        self.say, self.total_epochs = say, total_epochs

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        self.say(epoch_line(logs, self.total_epochs))


class LivePlotting(Callback):
    """``--plot`` redrawn after an epoch when it is due (not after the last:
    the run's end draws it)."""

    def __init__(
        self,
        plot: LivePlot,
        history: list[dict[str, Any]],
        total_epochs: int,
        holds: Callable[[], str],
    ) -> None:
        self.plot, self.history, self.total_epochs = plot, history, total_epochs
        #: what the checkpoint holds, for the one line of a failed drawing
        self.holds = holds

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        from ..figures import PlotError

        if epoch < self.total_epochs and self.plot.due():
            try:
                self.plot.draw(self.history)
            except PlotError as exc:
                raise PlotError(f"{exc}; {self.holds()}") from None


class SignalsWait(Callback):
    """Runs ``callbacks`` as one, their ``on_epoch_end`` with signals held
    back until all are done (:func:`xpnet.interrupts.deferred`)."""

    def __init__(self, callbacks: Sequence[Callback]) -> None:
        self.callbacks = list(callbacks)

    def set_model(self, model: Any) -> None:
        super().set_model(model)
        for callback in self.callbacks:
            callback.set_model(model)

    def set_params(self, params: dict[str, Any]) -> None:
        super().set_params(params)
        for callback in self.callbacks:
            callback.set_params(params)

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        for callback in self.callbacks:
            callback.on_train_begin(logs)

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        for callback in self.callbacks:
            callback.on_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        from ..interrupts import deferred

        with deferred():
            for callback in self.callbacks:
                callback.on_epoch_end(epoch, logs)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        for callback in self.callbacks:
            callback.on_train_end(logs)

    def close(self) -> None:
        for callback in self.callbacks:
            callback.close()
