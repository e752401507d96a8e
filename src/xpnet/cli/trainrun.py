"""One ``xpnet train`` run as its phases share it: the options frozen once
(:func:`freeze`) and this process's facts (:class:`TrainRun`)."""

from __future__ import annotations

import argparse
import dataclasses
from typing import TYPE_CHECKING, Any

from ..backend import Backend
from ..checkpoint import Checkpoint
from .resume import TRAIN_OPTIONS, SaveTarget

if TYPE_CHECKING:
    from ..runlock import CheckpointLock
    from .distributed import Rank
    from .plot import LivePlot

__all__ = ["TrainRun", "freeze"]

#: what the command line puts on its namespace beside the options: the
#: run's report, clean-ups and the options given (not frozen)
_RUN_STATE = ("report", "cleanup", "given", "describe_saved", "func")


def freeze(args: argparse.Namespace) -> Any:
    """The options of ``args`` as one frozen :class:`TrainConfig` (lists as
    tuples), taken once the resume rules and defaults are applied."""
    options = {
        k: tuple(v) if isinstance(v, list) else v
        for k, v in vars(args).items()
        if k not in _RUN_STATE
    }
    cls = dataclasses.make_dataclass("TrainConfig", list(options), frozen=True)
    return cls(**options)


@dataclasses.dataclass
class TrainRun:
    """What the phases share: the frozen options and this process's facts."""

    config: Any
    args: argparse.Namespace  # its report and clean-ups only
    rank: Rank | None
    backend: Backend
    target: SaveTarget
    plot: LivePlot | None
    saved: Checkpoint | None
    resume: str | None
    notices: list[str]
    #: the --save checkpoint's lock (None: not saving, or not rank 0)
    lock: CheckpointLock | None = None

    @property
    def writes(self) -> bool:
        # Of the ranks of a distributed run, rank 0 alone writes files.
        return self.rank is None or self.rank.lead

    def options(self) -> dict[str, Any]:
        """The training options a checkpoint records."""
        values = {k: getattr(self.config, k) for k in TRAIN_OPTIONS}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}
