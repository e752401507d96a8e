"""How the ranks of a data-parallel run share each batch (pure arithmetic;
the plan itself is :class:`xpnet.batching.BatchPlan`, one process's case
included).

Every rank draws the same permutation of the ``n`` samples and walks the same
global batches ``[lo, hi)`` of ``batch_size`` rows (the last one partial).
Rank ``r`` of ``size`` takes the contiguous rows ``[lo + m*r//size,
lo + m*(r+1)//size)`` of a batch of ``m`` rows: shares differ by at most one
row, and a rank may get none when ``m < size`` (it still joins the step's
all-reduce with zero gradients).
"""

from __future__ import annotations

from ..batching import Batch, shard
from ..batching import BatchPlan as ShardPlan

__all__ = ["Batch", "ShardPlan", "rank_samples", "shard"]


def rank_samples(n: int, batch_size: int, size: int) -> list[int]:
    """The samples each of ``size`` ranks processes in an epoch of ``n``."""
    counts = [0] * size
    for lo in range(0, n, batch_size):
        hi = min(lo + batch_size, n)
        for r in range(size):
            a, b = shard(lo, hi, r, size)
            counts[r] += b - a
    return counts
