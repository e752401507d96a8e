"""How the ranks of a data-parallel run share each batch (pure arithmetic).

Every rank draws the same permutation of the ``n`` samples and walks the same
global batches ``[lo, hi)`` of ``batch_size`` rows (the last one partial).
Rank ``r`` of ``size`` takes the contiguous rows ``[lo + m*r//size,
lo + m*(r+1)//size)`` of a batch of ``m`` rows: shares differ by at most one
row, and a rank may get none when ``m < size`` (it still joins the step's
all-reduce with zero gradients).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ..arraytypes import HostArray

__all__ = ["Batch", "ShardPlan", "rank_samples", "shard"]


def shard(lo: int, hi: int, rank: int, size: int) -> tuple[int, int]:
    """Rank ``rank``'s rows ``[a, b)`` of the global batch ``[lo, hi)``."""
    m = hi - lo
    return lo + m * rank // size, lo + m * (rank + 1) // size


@dataclass(frozen=True)
class Batch:
    """One global batch as one rank sees it.

    ``lo``, ``hi``: this rank's rows, as positions in its epoch order (see
    :attr:`ShardPlan.rows`); ``total``: the rows of the whole global batch;
    ``done``: the global samples done after it (for progress bars).
    """

    lo: int
    hi: int
    total: int
    done: int


@dataclass(frozen=True)
class ShardPlan:
    """This rank's part of every epoch of ``n`` samples in batches of
    ``batch_size``, the same every epoch (so each is worked out once).

    Attributes:
        batches: one :class:`Batch` per global batch, in order.
        rows: ``(n_local,)`` int64 positions in the (permuted) epoch order of
            this rank's rows, batch after batch; ``None`` when that is all of
            them (one rank).
        n_local: the samples this rank processes per epoch.
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


def rank_samples(n: int, batch_size: int, size: int) -> list[int]:
    """The samples each of ``size`` ranks processes in an epoch of ``n``."""
    counts = [0] * size
    for lo in range(0, n, batch_size):
        hi = min(lo + batch_size, n)
        for r in range(size):
            a, b = shard(lo, hi, r, size)
            counts[r] += b - a
    return counts
