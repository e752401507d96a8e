"""One epoch's row in a model's history, as checkpoints keep it.

A model's ``epoch_history`` (:class:`xpnet.model.Sequential`), the history of
a checkpoint (``xpnet.save``, ``ModelCheckpoint``, ``xpnet train --save``)
and ``xpnet train --json`` all use this one layout, which ``xpnet plot``
draws. Host data only (floats, ints, ``None``).
"""

from __future__ import annotations

from typing import Any

__all__ = ["history_row"]


def history_row(record: dict[str, Any]) -> dict[str, Any]:
    """An epoch's record (:func:`xpnet.training.fit`'s) as the checkpoint's
    history and ``--json`` keep it."""
    return {
        "epoch": record["epoch"],
        "loss": record["loss"],
        "train_accuracy": record.get("accuracy"),
        **(
            {"val_loss": record["val_loss"], "val_accuracy": record["val_accuracy"]}
            if "val_loss" in record
            else {}
        ),
        "test_loss": record.get("test_loss"),
        "test_accuracy": record.get("test_accuracy"),
        "lr": record.get("lr"),
        "seconds": record["seconds"],
        "samples_per_second": record["samples_per_second"],
    }
