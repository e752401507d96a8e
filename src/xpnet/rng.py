"""The host random streams of a model: initial weights, shuffling and the
validation split.

All randomness is drawn on the host with ``numpy.random.Generator`` (an edge:
it imports numpy), so one seed gives bit-identical weights and batch orders
on every backend; only the finished arrays are copied to the device.
"""

from __future__ import annotations

import numpy as np

from .arraytypes import HostArray
from .errors import XpnetError

__all__ = ["MAX_SEED", "make_rngs", "permutation", "validation_split"]

#: the largest seed a checkpoint may record (``--seed`` takes 0 to this): the
#: reader refuses larger ones as damage, so the writer never makes them
MAX_SEED = 2**128

#: the spawn key of the validation split's stream (make_rngs uses 0 and 1)
_SPLIT_STREAM = 2


def make_rngs(seed: int | None) -> tuple[np.random.Generator, np.random.Generator]:
    """Two independent host RNGs from one seed: (initial weights, shuffling).

    Separate streams keep the weights of a seed the same whatever the data.
    """
    init_seq, shuffle_seq = np.random.SeedSequence(seed).spawn(2)
    return np.random.default_rng(init_seq), np.random.default_rng(shuffle_seq)


def permutation(rng: np.random.Generator, n: int) -> HostArray:
    """A random permutation of ``range(n)`` as int64 ``(n,)`` (one per epoch)."""
    return rng.permutation(n).astype(np.int64)


def validation_split(
    seed: int | None, n: int, fraction: float, labels: HostArray | None = None
) -> tuple[HostArray, HostArray]:
    """Row indices ``(train, validation)``, int64, each ascending, holding out
    about ``fraction`` (0 < fraction < 1) of ``n`` rows.

    Stratified when class ``labels: (n,)`` are given (each class gives
    ``round(fraction * its count)`` rows, as scikit-learn's MLP does for early
    stopping), else uniformly random. Drawn from its own stream of ``seed``,
    so the same seed and data give the same split in every call (a resumed run
    validates on the rows it held out before) and the split does not move the
    weights' or the shuffling's streams.
    """
    if (
        isinstance(fraction, bool)
        or not isinstance(fraction, int | float)
        or not 0 < fraction < 1
    ):
        raise XpnetError(
            f"validation_split must be a fraction between 0 and 1, got {fraction!r}"
        )
    rng = np.random.default_rng(
        np.random.SeedSequence(seed, spawn_key=(_SPLIT_STREAM,))
    )
    if labels is None:
        held = rng.permutation(n)[: round(fraction * n)]
    else:
        groups = [np.flatnonzero(labels == c) for c in np.unique(labels)]
        held = np.concatenate(
            [rng.permutation(g)[: round(fraction * len(g))] for g in groups]
        )
    val = np.zeros(n, dtype=bool)
    val[held] = True
    if not 0 < held.size < n:
        raise XpnetError(
            f"validation_split {fraction:g} of {n} sample{'s' * (n != 1)} leaves "
            f"{held.size} for validation and {n - held.size} for training: both "
            "need at least one; use more data or another fraction"
        )
    return np.flatnonzero(~val).astype(np.int64), np.flatnonzero(val).astype(np.int64)
