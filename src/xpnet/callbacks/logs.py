"""Per-epoch logs: a CSV file, a JSON-lines file, TensorBoard event files.

Each writes one row, line or set of scalars per trained epoch, flushed when
written (a run stopped by Ctrl-C keeps every finished epoch), only on the
lead process, into files it creates exclusively (see :mod:`.files`);
``append=True`` continues an existing log (a resumed run).

One logger given to several fits (``partial_fit``, fitting on in a loop)
keeps one log while they continue one model's training: the same model, its
epochs numbered on. A fit of another model, or of the same model trained
again from fewer epochs, is refused in one line unless ``append=True``: the
file would otherwise mix two runs' rows without a word.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
import weakref
from pathlib import Path
from typing import Any, TextIO

from ..errors import XpnetError
from .base import Callback
from .files import open_log

__all__ = ["CSVLogger", "JSONLinesLogger", "TensorBoard"]

#: the record keys logged, in this order, when present
LOGGED = (
    "epoch",
    "loss",
    "accuracy",
    "val_loss",
    "val_accuracy",
    "test_loss",
    "test_accuracy",
    "lr",
    "seconds",
    "samples_per_second",
)


class _FileLogger(Callback):
    """A log file opened on the first epoch and closed when training ends."""

    what = "log"

    def __init__(self, path: str | os.PathLike, append: bool = False) -> None:
        self.path = Path(path)
        self.append = bool(append)
        self.file: TextIO | None = None
        #: the model whose run this logger's file holds (after its first fit)
        self._logged_model: weakref.ref[Any] | None = None
        #: the last epoch number written (0: none yet)
        self._last_epoch = 0

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        if not self.params.get("lead", True) or self.file is not None:
            return
        continuing = self._logged_model is not None
        if continuing and not self.append:
            self._check_same_run()
        self.file = open_log(self.path, self.append or continuing, self.what)
        self._logged_model = weakref.ref(self.model)

    def __getstate__(self) -> dict[str, Any]:
        # A pickled logger (e.g. in a pickled scikit-learn estimator's
        # callbacks) forgets which model it logged: a weak reference does not
        # pickle, and the copy logs like a new logger of the same file.
        state = dict(vars(self))
        state["_logged_model"], state["file"] = None, None
        return state

    def _check_same_run(self) -> None:
        """Refuse a fit that does not continue the run this file holds."""
        assert self._logged_model is not None
        same_model = self._logged_model() is self.model
        if same_model and self.model.epochs_trained >= self._last_epoch:
            return
        name = type(self).__name__
        if same_model:
            why = (
                f"this model's epochs up to {self._last_epoch}, and this fit "
                f"starts again at epoch {self.model.epochs_trained + 1}"
            )
        else:
            why = "an earlier fit of another model"
        raise XpnetError(
            f"{name} {str(self.path)!r} already holds {why}: give this fit a new "
            f"{name} with another file name, or {name}(..., append=True) to add "
            "its rows to that file"
        )

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        if self.file is not None:
            self.write({k: logs[k] for k in LOGGED if k in logs})
            self.file.flush()
            self._last_epoch = int(logs.get("epoch", self._last_epoch))

    def write(self, row: dict[str, Any]) -> None:
        raise NotImplementedError

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self.close()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


class CSVLogger(_FileLogger):
    """One CSV row per epoch under a header row (Keras's ``CSVLogger``):
    ``epoch, loss, accuracy, val_loss, ...`` as the first epoch has them;
    an empty cell for a value the model has not (a regressor's accuracy)."""

    what = "CSV log"

    def __init__(
        self, filename: str | os.PathLike, separator: str = ",", append: bool = False
    ) -> None:
        super().__init__(filename, append)
        self.separator = separator
        self.columns: list[str] | None = None

    def write(self, row: dict[str, Any]) -> None:
        assert self.file is not None
        writer = csv.writer(self.file, delimiter=self.separator, lineterminator="\n")
        if self.columns is None:
            self.columns = self._existing_columns() or list(row)
            # (An appending file's position says nothing before it writes.)
            if os.fstat(self.file.fileno()).st_size == 0:
                writer.writerow(self.columns)
        writer.writerow(["" if row.get(k) is None else row[k] for k in self.columns])

    def _existing_columns(self) -> list[str] | None:
        """The header of the file being continued, if it has one."""
        try:
            with open(self.path, encoding="utf-8") as existing:
                first = existing.readline().strip()
        except OSError:
            return None
        return first.split(self.separator) if first else None


class JSONLinesLogger(_FileLogger):
    """One JSON object per epoch and line (``NaN`` and infinities as
    ``null``)."""

    what = "JSON-lines log"

    def write(self, row: dict[str, Any]) -> None:
        assert self.file is not None
        clean = {
            k: None if isinstance(v, float) and not math.isfinite(v) else v
            for k, v in row.items()
        }
        self.file.write(json.dumps(clean) + "\n")


class TensorBoard(Callback):
    """Scalars per epoch as TensorBoard event files in ``log_dir``:
    ``epoch_loss``, ``epoch_accuracy``, ``epoch_learning_rate`` and the
    validation ones under ``validation/`` (Keras's layout: ``train/`` and
    ``validation/`` runs), at step = epoch.

    Always importable; writing needs the ``tensorboard`` package
    (``pip install 'xpnet[tensorboard]'``), asked for when training starts.
    """

    def __init__(self, log_dir: str | os.PathLike = "logs") -> None:
        self.log_dir = Path(log_dir)
        self.writers: dict[str, Any] = {}

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        if not self.params.get("lead", True) or self.writers:
            return
        writer_class = _event_writer_class()
        if self.log_dir.is_symlink() or (
            self.log_dir.exists() and not self.log_dir.is_dir()
        ):
            raise XpnetError(
                f"TensorBoard log_dir {str(self.log_dir)!r} is not a directory: "
                "give a directory name"
            )
        runs = ["train", *(["validation"] if self.params.get("validation") else [])]
        for run in runs:
            folder = self.log_dir / run
            folder.mkdir(parents=True, exist_ok=True)
            # A name of its own per process and start (TensorBoard's scheme):
            # two runs into one folder never write the same file.
            suffix = f".{os.getpid()}.{time.time_ns()}.v2"
            self.writers[run] = writer_class(str(folder), filename_suffix=suffix)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        if not self.writers:
            return
        scalars = {
            "train": {
                "epoch_loss": logs.get("loss"),
                "epoch_accuracy": logs.get("accuracy"),
                "epoch_learning_rate": logs.get("lr"),
            },
            "validation": {
                "epoch_loss": logs.get("val_loss"),
                "epoch_accuracy": logs.get("val_accuracy"),
            },
        }
        for run, writer in self.writers.items():
            for tag, value in scalars[run].items():
                if value is not None:
                    writer.add_event(_scalar_event(tag, float(value), epoch))
            writer.flush()

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self.close()

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()
        self.writers = {}


def _event_writer_class() -> Any:
    try:
        from tensorboard.summary.writer.event_file_writer import EventFileWriter
    except ImportError:
        raise XpnetError(
            "the TensorBoard callback needs the tensorboard package: pip install "
            "'xpnet[tensorboard]' (or pip install tensorboard)"
        ) from None
    return EventFileWriter


def _scalar_event(tag: str, value: float, step: int) -> Any:
    from tensorboard.compat.proto import event_pb2, summary_pb2

    summary = summary_pb2.Summary(
        value=[summary_pb2.Summary.Value(tag=tag, simple_value=value)]
    )
    return event_pb2.Event(wall_time=time.time(), step=step, summary=summary)
