"""The host random streams of a model: initial weights and shuffling.

All randomness is drawn on the host with ``numpy.random.Generator`` (an edge:
it imports numpy), so one seed gives bit-identical weights and batch orders
on every backend; only the finished arrays are copied to the device.
"""

from __future__ import annotations

import numpy as np

from .arraytypes import HostArray

__all__ = ["make_rngs", "permutation"]


def make_rngs(seed: int | None) -> tuple[np.random.Generator, np.random.Generator]:
    """Two independent host RNGs from one seed: (initial weights, shuffling).

    Separate streams keep the weights of a seed the same whatever the data.
    """
    init_seq, shuffle_seq = np.random.SeedSequence(seed).spawn(2)
    return np.random.default_rng(init_seq), np.random.default_rng(shuffle_seq)


def permutation(rng: np.random.Generator, n: int) -> HostArray:
    """A random permutation of ``range(n)`` as int64 ``(n,)`` (one per epoch)."""
    return rng.permutation(n).astype(np.int64)
