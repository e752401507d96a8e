"""Batches of an epoch: which rows each step takes (host arithmetic), and the
iterator that hands the step its slices of X and the targets.

:class:`BatchPlan` is this process's part of every epoch of ``n`` samples in
batches of ``batch_size``. One process takes every row; of ``size`` ranks of
a data-parallel run (:mod:`xpnet.distributed`), rank ``r`` takes the
contiguous rows ``[lo + m*r//size, lo + m*(r+1)//size)`` of each batch of
``m`` rows: shares differ by at most one row, and a rank may get none when
``m < size`` (it still joins the step's all-reduce with zero gradients).

:func:`epoch_batches` gathers the epoch's rows a group of batches at a time
(about :attr:`~xpnet.fastpaths.Ops.gather_bytes` per gather, into a reused
buffer where the backend allows) and yields contiguous slices: few operations
per step, no device read.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .arraytypes import Array, HostArray
from .fastpaths import Ops

__all__ = ["Batch", "BatchPlan", "batches_per_gather", "epoch_batches", "shard"]


def shard(lo: int, hi: int, rank: int, size: int) -> tuple[int, int]:
    """Rank ``rank``'s rows ``[a, b)`` of the global batch ``[lo, hi)``."""
    m = hi - lo
    return lo + m * rank // size, lo + m * (rank + 1) // size


@dataclass(frozen=True)
class Batch:
    """One global batch as this process sees it.

    ``lo``, ``hi``: this process's rows, as positions in its epoch order (see
    :attr:`BatchPlan.rows`); ``total``: the rows of the whole global batch;
    ``done``: the global samples done after it (for progress bars).
    """

    lo: int
    hi: int
    total: int
    done: int


@dataclass(frozen=True)
class BatchPlan:
    """This process's part of every epoch of ``n`` samples in batches of
    ``batch_size``, the same every epoch (so each is worked out once).

    Attributes:
        batches: one :class:`Batch` per global batch, in order.
        rows: ``(n_local,)`` int64 positions in the (permuted) epoch order of
            this rank's rows, batch after batch; ``None`` when that is all of
            them (one rank).
        n_local: the samples this process steps through per epoch.
    """

    n: int
    batch_size: int
    rank: int = 0
    size: int = 1

    @property
    def sharded(self) -> bool:
        return self.size > 1

    @cached_property
    def batches(self) -> list[Batch]:
        out, pos = [], 0
        for lo in range(0, self.n, self.batch_size):
            hi = min(lo + self.batch_size, self.n)
            a, b = shard(lo, hi, self.rank, self.size)
            out.append(Batch(pos, pos + b - a, hi - lo, hi))
            pos += b - a
        return out

    @cached_property
    def rows(self) -> HostArray | None:
        if not self.sharded:
            return None
        parts = [
            np.arange(
                *shard(lo, min(lo + self.batch_size, self.n), self.rank, self.size)
            )
            for lo in range(0, self.n, self.batch_size)
        ]
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, int)

    @property
    def n_local(self) -> int:
        return self.batches[-1].hi if self.batches else 0


def batches_per_gather(batch_size: int, features: int, size: int) -> int:
    """Whole batches per gather: about ``size`` bytes of float32 rows (the
    backend's :attr:`~xpnet.fastpaths.Ops.gather_bytes`), at least one."""
    return max(1, size // (4 * features * batch_size))


def epoch_batches(
    plan: BatchPlan,
    X: Array,
    targets: Array,
    order: Array | None,
    ops: Ops,
    per_gather: int,
    buffer: Array | None,
) -> Iterator[tuple[Batch, Array, Array]]:
    """``(batch, xb, yb)`` for each of ``plan``'s batches of one epoch.

    ``X: (n, features)`` in its stored order, ``targets: (n_local, outputs)``
    already in the epoch's order; ``order``: ``(n_local,)`` device positions
    of the epoch's rows in X (``None``: X's own order). One gather per group
    of ``per_gather`` batches (into ``buffer``'s rows where given), then
    contiguous slices, so the rows are still in cache when used.
    """
    batches = plan.batches
    for g in range(0, len(batches), per_gather):
        group = batches[g : g + per_gather]
        c0, c1 = group[0].lo, group[-1].hi
        if order is None:
            Xc = X[c0:c1, ...]
        else:
            into = buffer[: c1 - c0, ...] if buffer is not None else None
            Xc = ops.take_rows(X, order[c0:c1], into)
        for batch in group:
            lo, hi = batch.lo, batch.hi
            yield batch, Xc[lo - c0 : hi - c0, ...], targets[lo:hi, ...]
