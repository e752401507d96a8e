"""What :func:`xpnet.training.fit` shows while it runs: a progress bar
refreshed by wall clock, and one line per epoch.

The bar's running loss and accuracy live on the device. ``fit`` asks
:meth:`Progress.due` after each step, which only reads a host clock; when a
refresh is due, ``fit`` computes the loss and hits of the steps since the last
refresh and reads them back in one read, so a bar costs one device read per
refresh (at most 1 / :data:`REFRESH_SECONDS` a second) and none in between.
A bar that is not drawn (not a terminal) is never due, so it reads nothing.

The bar is drawn by tqdm (on stderr); the epoch lines go to stdout.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from .callbacks.base import BatchLogs, Callback
from .errors import XpnetError

__all__ = [
    "REFRESH_SECONDS",
    "Progress",
    "ProgressCallback",
    "epoch_line",
    "for_verbose",
]

#: the bar is redrawn (and the device read) at most once per this many seconds
REFRESH_SECONDS = 0.25


class Progress:
    """A progress bar and/or one line per epoch for :func:`~xpnet.training.fit`.

    ``bar``: ``"auto"`` draws it only when ``bar_file`` is a terminal, ``True``
    always, ``False`` never. ``lines``: print :func:`epoch_line` after each
    epoch to ``line_file``. ``clock`` (seconds) and ``interval`` (seconds
    between refreshes) are there for tests.
    """

    def __init__(
        self,
        *,
        bar: bool | str = "auto",
        lines: bool = False,
        bar_file: TextIO | None = None,
        line_file: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
        interval: float = REFRESH_SECONDS,
    ) -> None:
        self.bar_file = bar_file
        self.line_file = line_file
        self.lines = lines
        self.clock = clock
        self.interval = interval
        self._bar_wanted = bar
        self._bar: Any = None
        self._last = 0.0
        #: the number of refreshes so far (each one device read in fit)
        self.refreshes = 0

    def _draws_bar(self) -> bool:
        if self._bar_wanted == "auto":
            file = self.bar_file or sys.stderr
            return bool(getattr(file, "isatty", lambda: False)())
        return bool(self._bar_wanted)

    def start_epoch(self, epoch: int, total_epochs: int, samples: int) -> None:
        """Open the bar of ``epoch`` (from 1) of ``total_epochs``, ``samples``
        long."""
        self.close()
        if self._draws_bar():
            from tqdm import tqdm

            self._bar = tqdm(
                total=samples,
                desc=f"epoch {epoch}/{total_epochs}",
                unit="sample",
                unit_scale=True,
                leave=False,
                file=self.bar_file or sys.stderr,
                dynamic_ncols=True,
                # fit decides when to redraw: every update is drawn.
                mininterval=0,
                miniters=1,
            )
        self._last = self.clock()

    def due(self) -> bool:
        """Whether a refresh is due now (a host clock read; no device work)."""
        if self._bar is None:
            return False
        now = self.clock()
        if now - self._last < self.interval:
            return False
        self._last = now
        return True

    def show(self, samples_done: int, loss: float, accuracy: float | None) -> None:
        """Redraw the bar: ``samples_done`` of the epoch, the running mean
        ``loss`` and ``accuracy`` (a fraction, ``None`` for a regressor)."""
        if self._bar is None:
            return
        self.refreshes += 1
        text = f"loss {loss:.4f}"
        if accuracy is not None:
            text += f"  acc {100 * accuracy:.2f}%"
        self._bar.set_postfix_str(text, refresh=False)
        self._bar.update(samples_done - self._bar.n)

    def end_epoch(self, record: dict[str, Any], total_epochs: int) -> None:
        """Clear the bar and, with ``lines``, print the epoch's line."""
        self.close()
        if self.lines:
            print(
                epoch_line(record, total_epochs),
                file=self.line_file or sys.stdout,
                flush=True,
            )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def for_verbose(verbose: int) -> Progress | None:
    """Keras's ``verbose``: 0 silent, 1 a bar (on a terminal) and a line per
    epoch, 2 a line per epoch."""
    if isinstance(verbose, bool) or verbose not in (0, 1, 2):
        raise XpnetError(f"verbose must be 0, 1 or 2, got {verbose!r}")
    if verbose == 0:
        return None
    return Progress(bar="auto" if verbose == 1 else False, lines=True)


def epoch_line(record: dict[str, Any], total_epochs: int) -> str:
    """One epoch as a line: loss, accuracies (train, ``val_accuracy`` and
    ``test_accuracy`` where present), seconds and samples per second."""
    parts = [
        f"epoch {record['epoch']:>3}/{total_epochs}",
        f"loss {record['loss']:.4f}",
    ]
    for key, name in (
        ("accuracy", "train acc"),
        ("val_accuracy", "val acc"),
        ("test_accuracy", "test acc"),
    ):
        value = record.get(key)
        if value is not None:
            parts.append(f"{name} {100 * value:6.2f}%")
    if record.get("accuracy") is None and record.get("val_loss") is not None:
        parts.append(f"val loss {record['val_loss']:.4f}")
    parts.append(f"{record['seconds']:6.2f} s")
    parts.append(f"{record['samples_per_second']:>9,.0f} samples/s")
    return "  ".join(parts)


class ProgressCallback(Callback):
    """A :class:`Progress` display as a :func:`~xpnet.training.fit` callback:
    the bar's epoch opens in ``on_epoch_begin``, is redrawn from
    ``on_batch_end`` when :meth:`Progress.due` (one device read per redraw,
    none between) and gives way to the epoch's line in ``on_epoch_end``."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.progress.start_epoch(epoch, self.params["epochs"], self.params["samples"])

    def on_batch_end(self, batch: int, logs: BatchLogs) -> None:
        # This rank's rows only: the display needs no communication.
        if logs.fresh and self.progress.due():
            self.progress.show(logs.done, *logs.metrics())

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        self.progress.end_epoch(logs, self.params["epochs"])

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self.progress.close()
