"""The checkpoint format's identity, its error, and optimizers by name."""

from __future__ import annotations

from typing import Any

from ..errors import XpnetError
from ..optimizers import OPTIMIZERS, Optimizer
from ..schedules import schedule_from_config, schedule_name

FORMAT = "xpnet-checkpoint"


FORMAT_VERSION = 1


class CheckpointError(XpnetError):
    """A checkpoint cannot be read or does not fit; the message is one line."""


def optimizer_config(optimizer: Optimizer) -> dict[str, Any]:
    """Name, settings and schedule of an optimizer, as JSON-ready data."""
    name = next((k for k, cls in OPTIMIZERS.items() if type(optimizer) is cls), None)
    if name is None:
        raise CheckpointError(
            f"optimizer {type(optimizer).__name__} cannot be saved by name"
        )
    return {
        "name": name,
        "config": optimizer.config(),
        "schedule": {
            "name": schedule_name(optimizer.schedule),
            **optimizer.schedule.config(),
        },
    }


def optimizer_from_config(config: dict[str, Any]) -> Optimizer:
    cls = OPTIMIZERS[config["name"]]
    return cls(lr=schedule_from_config(config["schedule"]), **config["config"])
