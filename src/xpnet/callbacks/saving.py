""":class:`ModelCheckpoint`: the model saved as an xpnet checkpoint during
training, with the safety rules of ``xpnet train --save``."""

from __future__ import annotations

import os
import re
import string
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import XpnetError
from .monitor import _Monitor

if TYPE_CHECKING:
    from ..checkpoint import Checkpoint

__all__ = ["ModelCheckpoint"]

#: the epoch record's keys (see :mod:`xpnet.epoch`) a ``filepath`` may name,
#: with a value of each one's type to try a template on
TEMPLATE_KEYS: dict[str, int | float] = {
    "epoch": 1,
    "loss": 0.5,
    "accuracy": 0.5,
    "val_loss": 0.5,
    "val_accuracy": 0.5,
    "lr": 0.1,
    "seconds": 1.0,
    "samples_per_second": 1.0,
    "samples": 1,
}


class ModelCheckpoint(_Monitor):
    """Save the model to ``filepath`` (``.npz``, an xpnet checkpoint that
    :meth:`xpnet.checkpoint.Checkpoint.from_file` and ``xpnet evaluate``
    read) after every epoch, or with ``save_best_only`` after each epoch
    whose ``monitor`` value is the best so far (beating it by more than
    ``min_delta``).

    ``filepath`` may hold ``{epoch}`` (e.g. ``"run-{epoch:03d}.npz"``). The
    file is written to a temporary name and renamed (a reader sees the old
    file or the new one, never half of one); an existing file this callback
    did not write is refused unless ``overwrite``; while training, a lock
    beside each file (``<file>.lock``) keeps a second process from writing
    it. Only the lead process writes. ``best``, ``best_epoch``: the best
    value and its epoch so far (saved in its :meth:`state`).
    """

    state_key = "model_checkpoint"

    def __init__(
        self,
        filepath: str | os.PathLike,
        monitor: str = "val_loss",
        save_best_only: bool = False,
        mode: str = "auto",
        min_delta: float = 0.0,
        overwrite: bool = False,
        record: Checkpoint | None = None,
    ) -> None:
        super().__init__(monitor, mode, min_delta)
        self.filepath = str(filepath)
        from ..checkpoint import checkpoint_name_problem

        problem = checkpoint_name_problem(self.filepath)
        if problem:
            raise XpnetError(
                f"ModelCheckpoint {self.filepath!r}: a checkpoint path {problem}"
            )
        problem = template_problem(self.filepath)
        if problem:
            raise XpnetError(f"ModelCheckpoint {self.filepath!r}: {problem}")
        self.save_best_only = bool(save_best_only)
        self.overwrite = bool(overwrite)
        self.best_epoch = 0
        #: the paths this callback wrote (it may replace those)
        self.written: set[Path] = set()
        self._locks: dict[Path, Any] = {}
        #: the checkpoint written (the model with its options, dataset,
        #: preprocessing and history); ``None``: the model alone
        self.record = record

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        if self.save_best_only:
            super().on_train_begin(logs)
        asked = template_fields(self.filepath)
        if (
            not self.params.get("validation", True)
            and {"val_loss", "val_accuracy"} & asked
        ):
            raise XpnetError(
                f"ModelCheckpoint {self.filepath!r} names a validation value, and "
                "this fit has no validation data: pass validation_data or "
                "validation_split, or leave {val_...} out of the name"
            )
        if self.params.get("lead", True) and not asked:
            # One name for the whole run: claimed before the first epoch.
            self.claim(Path(self._filled(0, {})))

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        if self.save_best_only:
            value = self.value(logs)
            if not self.improves(value):
                return
            self.best, self.best_epoch = value, epoch
        if self.params.get("lead", True):
            self.save(Path(self._filled(epoch, logs)))

    def _filled(self, epoch: int, logs: dict[str, Any]) -> str:
        """The file name for this epoch (``filepath``'s fields filled in)."""
        if not template_fields(self.filepath):
            return self.filepath.replace("{{", "{").replace("}}", "}")
        try:
            return self.filepath.format(**{**logs, "epoch": epoch})
        except (KeyError, ValueError, TypeError, IndexError, AttributeError) as exc:
            # E.g. {accuracy:.2f} for a regressor, whose accuracy is None.
            raise XpnetError(
                f"ModelCheckpoint {self.filepath!r}: cannot fill in the name for "
                f"epoch {epoch} ({type(exc).__name__}: {exc})"
            ) from None

    def claim(self, path: Path) -> None:
        """Check ``path`` may be written and take its lock (once)."""
        from ..runlock import CheckpointLock, remove_stale_temp_files

        if path not in self._locks:
            if path.is_dir():
                raise XpnetError(f"ModelCheckpoint {str(path)!r} is a directory")
            taken = path.exists() or path.with_name(path.name + ".json").exists()
            if taken and path not in self.written and not self.overwrite:
                raise XpnetError(
                    f"ModelCheckpoint {str(path)!r} already exists: pass "
                    "overwrite=True to replace it, or choose another name"
                )
            path.parent.mkdir(parents=True, exist_ok=True)
            self._locks[path] = CheckpointLock(path).acquire()
            remove_stale_temp_files(path)

    def save(self, path: Path) -> None:
        """Write the model to ``path`` now (atomically, under its lock)."""
        from ..checkpoint import Checkpoint

        self.claim(path)
        lock = self._locks[path]
        lock.verify()
        # A file new to this callback is created exclusively: one another
        # process made meanwhile is refused, never replaced.
        (self.record or Checkpoint(self.model)).to_file(
            path,
            exclusive=path not in self.written and not self.overwrite,
            before_replace=lock.adopt,
        )
        self.written.add(path)

    def close(self) -> None:
        for lock in self._locks.values():
            lock.release()
        self._locks = {}

    def state(self) -> dict[str, Any]:
        return {"best": self.best_for_state(), "best_epoch": self.best_epoch}

    def load_state(self, state: dict[str, Any]) -> None:
        self.load_best(state["best"])
        self.best_epoch = int(state["best_epoch"])


def template_fields(filepath: str) -> set[str]:
    """The record keys ``filepath`` names (``{epoch:03d}`` names ``epoch``);
    an empty set for a plain name (``{{``/``}}`` are literal braces)."""
    fields = set()
    for _, field, _, _ in string.Formatter().parse(filepath):
        if field is not None:
            fields.add(re.split(r"[.\[!]", field, maxsplit=1)[0])
    return fields


def template_problem(filepath: str) -> str | None:
    """What is wrong with ``filepath`` as a ModelCheckpoint name template, or
    ``None``: checked when the callback is made, not after the first epoch."""
    known = ", ".join("{" + key + "}" for key in TEMPLATE_KEYS)
    try:
        fields = template_fields(filepath)
    except ValueError as exc:
        return (
            f"is not a valid name template ({exc}): fields are written like "
            "{epoch:03d}, a literal brace as {{ or }}"
        )
    unknown = sorted(fields - set(TEMPLATE_KEYS))
    if unknown:
        shown = ", ".join("{" + name + "}" if name else "{}" for name in unknown)
        return f"names {shown}, which training does not record: use {known}"
    try:
        filepath.format(**TEMPLATE_KEYS)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        return f"cannot be filled in ({type(exc).__name__}: {exc}): e.g. {{epoch:03d}}"
    return None
