"""Data-parallel training across processes (MPI), in the style of ChainerMN.

Pass a communicator to :meth:`xpnet.model.Sequential.fit`::

    from xpnet.distributed import MPICommunicator
    comm = MPICommunicator()          # every rank: mpiexec -n N python train.py
    model.fit(X, y, epochs=5, batch_size=256, communicator=comm)

``batch_size`` is the global batch: every rank draws the same permutation and
takes its share of each batch (:mod:`.sharding`); the gradient sums are
all-reduced once per step and divided by the global batch size, so N ranks
follow one process's trajectory. Modules: :mod:`.communicator` (the
interface, :class:`SingleProcess`), :mod:`.mpi` (mpi4py, imported only
when an :class:`MPICommunicator` is made), :mod:`.data_parallel` (what
``fit`` does with a communicator).
"""

from __future__ import annotations

from typing import Any

from .communicator import Communicator, HostStaged, SingleProcess
from .data_parallel import DistributedError, is_collective
from .sharding import ShardPlan, rank_samples, shard

__all__ = [
    "Communicator",
    "DistributedError",
    "HostStaged",
    "MPICommunicator",
    "ShardPlan",
    "SingleProcess",
    "is_collective",
    "local_rank",
    "rank_samples",
    "shard",
]


def __getattr__(name: str) -> Any:
    # The MPI names load .mpi on first use; it imports mpi4py only when a
    # communicator is made.
    if name in ("MPICommunicator", "local_rank", "MPIUnavailable"):
        from . import mpi

        return getattr(mpi, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
