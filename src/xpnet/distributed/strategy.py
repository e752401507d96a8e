"""The data-parallel :class:`~xpnet.strategy.Strategy` of
:func:`xpnet.training.fit`: what a communicator of several ranks changes.

Every rank draws the same permutation and takes its share of each batch
(:class:`~xpnet.batching.BatchPlan`); the step all-reduces the gradients
(:func:`~xpnet.distributed.data_parallel.gradient_reducer`); each epoch's
loss and hits are summed over the ranks in rank order (bit-identical on
every rank), the parameters are checked equal, and the callbacks' stop and
learning-rate decisions are agreed (any rank's stop stops all; rank 0's
learning-rate factor is everyone's), so every rank trains the same epochs
with the same rates.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from ..arraytypes import Array
from ..batching import BatchPlan
from ..errors import XpnetError
from ..fastpaths import StepFn
from ..interrupts import held_signals
from ..strategy import Strategy
from .communicator import Communicator
from .data_parallel import (
    check_in_step,
    evaluate_sharded,
    gradient_reducer,
    start,
    sum_over_ranks,
    training_facts,
)

if TYPE_CHECKING:
    from ..model import Sequential

__all__ = ["DataParallel"]


class DataParallel(Strategy):
    """``fit`` over the ranks of ``comm`` (one rank: the identity, with each
    record's ``samples``)."""

    def __init__(self, comm: Communicator) -> None:
        self.comm = comm
        self.sharded = comm.size > 1
        self.lead = comm.rank == 0

    def plan(self, n: int, batch_size: int) -> BatchPlan:
        return BatchPlan(n, batch_size, self.comm.rank, self.comm.size)

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
        if not self.sharded:
            return step
        if step is not None:
            raise XpnetError(
                "fit cannot share a replacement step between ranks: pass step or "
                "communicator, not both"
            )
        facts = training_facts(model, X, y, batch_size, shuffle, validation)
        start(model, self.comm, facts)
        from ..training import TrainStep

        return TrainStep(model, gradient_reducer(self.comm, model))

    def running(self) -> contextlib.AbstractContextManager[Any]:
        # A signal to one rank is held back until the next step's all-reduce,
        # where all ranks agree to stop (see xpnet.interrupts).
        return held_signals() if self.sharded else contextlib.nullcontext()

    def epoch_terms(self, model: Sequential) -> list[Array]:
        # The parameters' sum: equal on every rank unless the ranks drifted.
        return [model.xp.sum(model.parameters.flat)] if self.sharded else []

    def totals(
        self,
        local: list[float],
        terms: list[float],
        n_local: int,
        n: int,
        labelled: bool,
    ) -> tuple[float, float | None]:
        if not self.sharded:
            return super().totals(local, terms, n_local, n, labelled)
        sums = [local[0] * n_local, local[1] if labelled else 0.0] if n_local else []
        loss_sum, hit_sum = sum_over_ranks(self.comm, sums or [0.0, 0.0])
        check_in_step(self.comm, terms[0])
        return loss_sum / n, hit_sum if labelled else None

    def evaluate(
        self, model: Sequential, X: Array, y: Array, labels: Array | None
    ) -> dict[str, Any]:
        if not self.sharded:
            return super().evaluate(model, X, y, labels)
        return evaluate_sharded(model, self.comm, X, y, labels, 1024)

    def agree(self, stop: bool, lr_factor: float) -> tuple[bool, float]:
        if not self.sharded:
            return stop, lr_factor
        decisions = self.comm.allgather([bool(stop), float(lr_factor)])
        return any(d[0] for d in decisions), decisions[0][1]

    def annotate(self, record: dict[str, Any], plan: BatchPlan) -> None:
        # This rank's rows, also for one rank.
        record["samples"] = plan.n_local
