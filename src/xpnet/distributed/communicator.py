"""Communicators: what a data-parallel run needs from its distributed engine.

An edge module (host NumPy): it moves arrays through the host.

:class:`Communicator` is the interface, in the style of ChainerMN's
communicators: ``rank`` and ``size``, and the few collectives that training
calls. Per step exactly one: :meth:`Communicator.reduce_step` sums the flat
gradient buffer over all ranks and, folded into the same call, the ranks' stop
requests (Ctrl-C or SIGTERM on any rank stops all of them at the same step).
At start-up and once per epoch a few small ones: :meth:`allgather` of Python
objects (configuration checks, metrics), :meth:`bcast_array` (initial
parameters). :meth:`abort` ends every rank at once (a rank that fails alone).

Implementations:

- :class:`SingleProcess`: one rank, every collective the identity (the
  default; nothing imports MPI);
- :class:`xpnet.distributed.mpi.MPICommunicator`: mpi4py, buffer-based
  ``Allreduce`` on a host staging buffer, so arrays of any backend (CuPy on a
  GPU included) go through any MPI.

A GPU-direct communicator (NCCL through ``cupy.cuda.nccl``, its unique id
broadcast over MPI, as ChainerMN's ``pure_nccl``) would subclass
:class:`Communicator` and override :meth:`reduce_step` to sum the device
buffer in place, with the stop flag as one extra element of it.

Every communicator times its gradient reductions (:attr:`reduce_seconds`,
:attr:`reduce_calls`, :attr:`reduce_bytes`), for benchmarks.

Opt-in overlap (``overlap = True``, e.g. ``MPICommunicator(overlap=True)``):
instead of one call per step, :meth:`Communicator.start_reduce` starts a
non-blocking sum of each layer's gradients as soon as backward has made them
(as PyTorch DDP's buckets), and :meth:`Communicator.finish_reduce` waits for
all of them, and the stop flag, before the update (see
:class:`xpnet.distributed.data_parallel.OverlappedAllReduce`).
"""

from __future__ import annotations

import time
from typing import Any, NoReturn

import numpy as np

from ..arraytypes import Array, HostArray
from ..backend import Backend, to_numpy

__all__ = ["Communicator", "SingleProcess"]


class Communicator:
    """Base class: one process (override the collectives for more)."""

    rank = 0
    size = 1
    #: reduce layer by layer during backward (several calls per step)
    overlap = False

    def __init__(self) -> None:
        #: wall seconds, calls and payload bytes of :meth:`reduce_step` so far
        self.reduce_seconds = 0.0
        self.reduce_calls = 0
        self.reduce_bytes = 0

    # -- the per-step collective ------------------------------------------------
    def reduce_step(
        self, grads: Array, stop: float, backend: Backend
    ) -> tuple[Array, float]:
        """Sum ``grads: (size,)`` (this rank's gradient sums, on ``backend``'s
        device) and ``stop`` (this rank's stop request, 0 for none) over all
        ranks, in one collective call; returns ``(summed grads, summed stop)``.

        The result may be ``grads`` itself, reduced in place. Timed.
        """
        start = time.perf_counter()
        out = self._reduce(grads, stop, backend)
        self.reduce_seconds += time.perf_counter() - start
        self.reduce_calls += 1
        self.reduce_bytes += (grads.shape[0] + 1) * _itemsize(grads.dtype)
        return out

    def _reduce(
        self, grads: Array, stop: float, backend: Backend
    ) -> tuple[Array, float]:
        return grads, stop

    # -- the overlapped step (opt-in) ---------------------------------------------
    def start_reduce(self, part: HostArray) -> Any:
        """Start summing ``part`` (a contiguous, writeable NumPy slice of the
        gradient buffer) over all ranks, in place, without waiting; returns a
        request for :meth:`finish_reduce`. Timed."""
        raise NotImplementedError(f"{type(self).__name__} cannot overlap")

    def progress(self, requests: list[Any]) -> None:
        """Let started reductions advance (MPI progresses only inside calls)."""

    def finish_reduce(self, requests: list[Any], stop: float, nbytes: int) -> float:
        """Wait for ``requests``; returns the sum of the ranks' ``stop``.
        Counts one step of ``nbytes`` gradient bytes (stop flag included)."""
        raise NotImplementedError(f"{type(self).__name__} cannot overlap")

    # -- small collectives (start-up, once per epoch) ----------------------------
    def allgather(self, value: Any) -> list[Any]:
        """Every rank's ``value`` (a small picklable object), in rank order."""
        return [value]

    def bcast_array(self, host: HostArray, root: int = 0) -> HostArray:
        """Rank ``root``'s host array, on every rank (same shape and dtype)."""
        return host

    def abort(self, code: int = 1) -> NoReturn:
        """End every rank now with exit status ``code``."""
        raise SystemExit(code)

    def data_parallel(self) -> Any:
        """The :class:`~xpnet.strategy.Strategy` that ``fit`` trains with
        over this communicator's ranks
        (:class:`~xpnet.distributed.strategy.DataParallel`)."""
        from .strategy import DataParallel

        return DataParallel(self)

    def describe(self) -> str:
        return f"{type(self).__name__}(rank {self.rank} of {self.size})"


def _itemsize(dtype: Any) -> int:
    """Bytes per element of any namespace's float dtype (e.g. ``torch.float32``,
    ``array_api_strict.float64``)."""
    return np.dtype(str(dtype).rsplit(".", 1)[-1]).itemsize


class SingleProcess(Communicator):
    """One rank: every collective is the identity, nothing is imported."""


class HostStaged(Communicator):
    """A communicator that sums on the host: the device buffer goes out through
    the backend's one exit (:func:`~xpnet.backend.to_numpy`) into a staging
    buffer one element longer (the stop flag), is summed by
    :meth:`_allreduce_host`, and comes back (written in place into a NumPy
    buffer, else copied to the device with :meth:`Backend.asarray`)."""

    def __init__(self) -> None:
        super().__init__()
        self._staging: HostArray | None = None

    def _reduce(
        self, grads: Array, stop: float, backend: Backend
    ) -> tuple[Array, float]:
        host = to_numpy(grads)
        n = host.shape[0]
        buf = self._staging
        if buf is None or buf.shape[0] != n + 1 or buf.dtype != host.dtype:
            buf = self._staging = np.empty(n + 1, dtype=host.dtype)
        buf[:n] = host
        buf[n] = stop
        self._allreduce_host(buf)
        if host is grads and host.flags.writeable:
            host[...] = buf[:n]
            return grads, float(buf[n])
        return backend.asarray(buf[:n]), float(buf[n])

    def _allreduce_host(self, buf: HostArray) -> None:
        """Sum ``buf`` over all ranks, in place."""
        raise NotImplementedError
