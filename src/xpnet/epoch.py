"""One epoch of :func:`xpnet.training.fit`: its batches, the step on each,
the callbacks' per-batch hook, and the epoch's record from one read-back.

The step's outputs are kept (in place where the namespace allows), so the
epoch's loss and accuracy cost a few whole-epoch operations, read back once
with whatever the strategy and the callbacks asked for
(:meth:`~xpnet.callbacks.Callback.epoch_terms`); nothing is read per batch
unless a callback asks (:class:`~xpnet.callbacks.BatchLogs`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import array_api_compat

from .arraytypes import Array
from .batching import BatchPlan, batches_per_gather, epoch_batches
from .callbacks.base import BatchLogs, CallbackList
from .fastpaths import StepFn
from .rng import permutation
from .strategy import Strategy

if TYPE_CHECKING:
    from .model import Sequential

__all__ = ["Epoch", "RunningMetrics"]


class Epoch:
    """One epoch of :func:`fit` (this process's share of it), with what every
    epoch of the fit shares: the plan, the step's update function, the
    backend's reused gather buffer and the float targets (one-hot labels),
    made once per fit."""

    def __init__(
        self,
        model: Sequential,
        strategy: Strategy,
        plan: BatchPlan,
        X: Array,
        y: Array,
        labels: Array | None,
        step: StepFn | None,
        shuffle: bool,
        callbacks: CallbackList,
        weight: Array | None = None,
    ) -> None:
        self.model, self.strategy, self.plan = model, strategy, plan
        self.X, self.labels, self.shuffle, self.callbacks = (
            X,
            labels,
            shuffle,
            callbacks,
        )
        step = step or model.step_function()
        # Without update() (a replacement step), take the outputs of a full step.
        self.update: Callable[..., Array] = getattr(step, "update", None) or (
            lambda xb, yb: step(xb, yb)[1]
        )
        ops = model.backend.ops
        self.per_gather = batches_per_gather(
            plan.batch_size, X.shape[1], ops.gather_bytes
        )
        # Reused by every gather of this fit where the backend can write into
        # it (NumPy): no fresh pages to fault in per chunk.
        rows = min(plan.n, self.per_gather * plan.batch_size)
        self.buffer = ops.rows_buffer(rows, X) if shuffle else None
        self.targets = model.loss.targets(y, model.out_features)
        #: sample weights ``(n,)`` on the device, or None (unweighted)
        self.weight = weight

    def run(self) -> dict[str, Any]:
        """Train one epoch; its record (see :class:`History`)."""
        model, plan, xp = self.model, self.plan, self.model.xp
        n, n_local = plan.n, plan.n_local
        lr = model.optimizer.lr
        start = time.perf_counter()
        order, Te, Le = self._order()
        We = self._in_order(self.weight, order)
        # The step's outputs are kept, so loss and accuracy cost a few whole-
        # epoch operations instead of a few per step.
        outs = xp.empty(
            (n_local, model.out_features),
            dtype=model.dtype,
            device=model.backend.device,
        )
        keep_in_place = array_api_compat.is_writeable_array(outs)
        parts: list[Array] = []
        watched = self.callbacks.per_batch
        logs = BatchLogs(RunningMetrics(model, Te, Le, outs, parts).read)
        batches = epoch_batches(
            plan, self.X, Te, order, model.backend.ops, self.per_gather, self.buffer
        )
        sharded, update = plan.sharded, self.update
        for batch, xb, yb in batches:
            if We is not None:
                out = update(xb, yb, weight=We[batch.lo : batch.hi])
            else:
                out = update(xb, yb, batch.total) if sharded else update(xb, yb)
            if keep_in_place:
                outs[batch.lo : batch.hi, ...] = out
            else:
                parts.append(out)
            if watched:
                logs.done, logs.rows = batch.done, batch.hi
                self.callbacks.batch_end(batch.done, logs)
        if not keep_in_place and parts:
            outs = xp.concat(parts, axis=0)
        metrics = []
        if n_local:
            metrics.append(model.loss.value(outs, Te, We))
            if Le is not None:
                metrics.append(model.loss.correct(outs, Le))
        own = self.strategy.epoch_terms(model)
        asked = self.callbacks.epoch_terms(outs, Te)
        # One read-back for the loss, the hits and what the strategy and the
        # callbacks asked for; it also waits for the device.
        values = (
            model.read_floats(*metrics, *own, *asked) if own or asked or metrics else []
        )
        local, rest = values[: len(metrics)], values[len(metrics) :]
        self.callbacks.take_epoch_terms(rest[len(own) :])
        seconds = time.perf_counter() - start
        mean_loss, hits = self.strategy.totals(
            local, rest[: len(own)], n_local, n, Le is not None
        )
        model.epochs_trained += 1
        record = {
            "epoch": model.epochs_trained,
            "loss": mean_loss,
            "accuracy": hits / n if hits is not None else None,
            "seconds": seconds,
            "samples_per_second": n / seconds if seconds > 0 else math.inf,
            "lr": lr,
        }
        self.strategy.annotate(record, plan)
        return record

    def _order(self) -> tuple[Array | None, Array, Array | None]:
        """The epoch's order of this process's rows (device positions in X,
        ``None`` for X's own order) and the targets and labels in it."""
        model, plan, xp = self.model, self.plan, self.model.xp
        # The same permutation on every rank; each takes its share of every
        # batch.
        rows = permutation(model.shuffle_rng, plan.n) if self.shuffle else None
        if plan.sharded:
            mine = plan.rows
            rows = mine if rows is None else rows[mine]
        if rows is None:
            return None, self.targets, self.labels
        order = model.backend.asarray(rows)
        Le = self.labels
        if Le is not None:
            Le = xp.take(Le, order, axis=0)
        return order, xp.take(self.targets, order, axis=0), Le

    def _in_order(self, values: Array | None, order: Array | None) -> Array | None:
        """Per-row ``values`` (e.g. the sample weights) in the epoch's order."""
        if values is None or order is None:
            return values
        return self.model.xp.take(values, order, axis=0)


class RunningMetrics:
    """The epoch's mean loss and accuracy so far, for a progress bar (see
    :class:`~xpnet.callbacks.BatchLogs`): each :meth:`read` adds the rows
    stepped since the previous one (a few whole-array operations) and reads
    them back in one read. ``outs``: the epoch's step outputs, kept in place,
    and ``parts``: the list they are kept in where they cannot be (one of
    the two is filled)."""

    def __init__(
        self,
        model: Sequential,
        targets: Array,
        labels: Array | None,
        outs: Array,
        parts: list[Array],
    ):
        self.model, self.targets, self.labels = model, targets, labels
        self.outs, self.parts = outs, parts
        self.done = 0  # rows counted so far
        self.parts_done = 0  # of the step outputs kept as a list
        self.loss_sum = 0.0
        self.hits = 0.0

    def read(self, hi: int) -> tuple[float, float | None]:
        """``(mean loss, accuracy or None)`` over rows ``[0, hi)`` of the
        epoch."""
        model, lo = self.model, self.done
        if self.parts:
            new = model.xp.concat(self.parts[self.parts_done :], axis=0)
            self.parts_done = len(self.parts)
        else:
            new = self.outs[lo:hi, ...]
        metrics = [model.loss.value(new, self.targets[lo:hi, ...])]
        if self.labels is not None:
            metrics.append(model.loss.correct(new, self.labels[lo:hi]))
        mean, *hits = model.read_floats(*metrics)
        self.loss_sum += mean * (hi - lo)
        self.hits += hits[0] if hits else 0.0
        self.done = hi
        return self.loss_sum / hi, (self.hits / hi if hits else None)
