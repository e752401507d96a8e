"""How :func:`xpnet.training.fit` shares its work between processes.

:class:`Strategy` is one process, the identity: every row, the model's own
step, local sums. A data-parallel run passes a communicator to ``fit``, which
asks it for its strategy (:meth:`Communicator.data_parallel
<xpnet.distributed.Communicator.data_parallel>`, living in
:mod:`xpnet.distributed`): rank ``r``'s share of every batch, a step that
all-reduces the gradients, sums over ranks, and one agreed stop and
learning-rate decision per epoch. The training loop never imports
:mod:`xpnet.distributed`.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from .arraytypes import Array
from .batching import BatchPlan
from .fastpaths import StepFn

if TYPE_CHECKING:
    from .model import Sequential

__all__ = ["Strategy"]


class Strategy:
    """One process: the identity of every hook ``fit`` calls."""

    #: whether the batches are shared between processes
    sharded = False
    #: whether this process writes files (logs, checkpoints, event files):
    #: rank 0 of several, the one process here
    lead = True

    def plan(self, n: int, batch_size: int) -> BatchPlan:
        """This process's rows of every epoch of ``n`` samples."""
        return BatchPlan(n, batch_size)

    def start(
        self,
        model: Sequential,
        X: Array,
        y: Array,
        batch_size: int,
        shuffle: bool,
        validation: tuple[Array, Array] | None,
        step: StepFn | None,
    ) -> StepFn | None:
        """Before the first epoch: the step to use (``None``: the model's)."""
        return step

    def running(self) -> contextlib.AbstractContextManager[Any]:
        """Held around the epochs (data parallel: signals wait for a step)."""
        return contextlib.nullcontext()

    def epoch_terms(self, model: Sequential) -> list[Array]:
        """0-d device values read back with each epoch's metrics."""
        return []

    def totals(
        self,
        local: list[float],
        terms: list[float],
        n_local: int,
        n: int,
        labelled: bool,
    ) -> tuple[float, float | None]:
        """``(mean loss, hits or None)`` of the epoch over every process, from
        this one's ``local`` ``[mean loss, hits if labelled]`` (``[]`` without
        rows) and the values of :meth:`epoch_terms`."""
        return local[0], (local[1] if labelled else None)

    def evaluate(
        self, model: Sequential, X: Array, y: Array, labels: Array | None
    ) -> dict[str, Any]:
        """``{"loss", "accuracy"}`` over all of the validation rows."""
        return model.evaluate_prepared(X, y, labels, 1024)

    def agree(self, stop: bool, lr_factor: float) -> tuple[bool, float]:
        """The epoch's stop and learning-rate decisions, the same on every
        process."""
        return stop, lr_factor

    def annotate(self, record: dict[str, Any], plan: BatchPlan) -> None:
        """Add this process's facts to an epoch's record."""
