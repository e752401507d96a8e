"""MPI through mpi4py: :class:`MPICommunicator` and the abort hook.

The only module that imports mpi4py, lazily, when a communicator is made, so
single-process use never needs MPI. Gradients go through a host staging
buffer with the buffer-based, upper-case ``Allreduce`` (no pickling), so
arrays of any backend work with any MPI build.
"""

from __future__ import annotations

import os
import sys
import time
from types import TracebackType
from typing import Any, NoReturn

import numpy as np

from ..arraytypes import HostArray
from ..errors import XpnetError
from .communicator import HostStaged
from .stall import StallWatch, stall_timeout

__all__ = ["MPICommunicator", "MPIUnavailable", "install_abort_hook", "local_rank"]

INSTALL_HINT = (
    "pip install 'xpnet[mpich]' (mpi4py with the MPICH wheels), or "
    "pip install 'xpnet[mpi]' to build mpi4py against the system MPI"
)

#: environment variables in which launchers give a process its rank on its node
LOCAL_RANK_VARIABLES = (
    "OMPI_COMM_WORLD_LOCAL_RANK",  # Open MPI
    "MPI_LOCALRANKID",  # MPICH (Hydra), Intel MPI
    "SLURM_LOCALID",  # srun
)


class MPIUnavailable(XpnetError):
    """mpi4py (or an MPI library under it) cannot be loaded."""


def _import_mpi() -> Any:
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise MPIUnavailable(
            f"distributed training needs mpi4py ({exc}): {INSTALL_HINT}"
        ) from None
    except RuntimeError as exc:  # mpi4py found but its MPI library is not
        raise MPIUnavailable(
            f"mpi4py cannot load an MPI library ({exc}): {INSTALL_HINT}"
        ) from None
    return MPI


class MPICommunicator(HostStaged):
    """Data-parallel ranks over an MPI communicator (default ``COMM_WORLD``).

    Args:
        comm: an ``mpi4py.MPI.Comm``; ``None`` for ``MPI.COMM_WORLD``.
        abort_on_error: install :func:`install_abort_hook`, so that an uncaught
            exception on any rank ends all of them instead of leaving the
            others waiting in a collective (like ``python -m mpi4py``).
        overlap: reduce each layer's gradients with a non-blocking
            ``Iallreduce`` as soon as backward has made them, and wait before
            the update (NumPy backend only; same sums for 2 ranks; see
            :class:`~xpnet.distributed.data_parallel.OverlappedAllReduce`).
        timeout: seconds one collective may wait for the other ranks before
            this rank prints one line and ends the run (a rank stopped, hung
            or gone; :mod:`.stall`); default ``$XPNET_MPI_TIMEOUT`` or 300,
            ``0`` waits forever.
    """

    def __init__(
        self,
        comm: Any = None,
        *,
        abort_on_error: bool = True,
        overlap: bool = False,
        timeout: float | None = None,
    ) -> None:
        super().__init__()
        self.overlap = bool(overlap)
        self.MPI = _import_mpi()
        self.comm = comm if comm is not None else self.MPI.COMM_WORLD
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        #: ends the run when a collective waits too long (see :mod:`.stall`)
        self.stall = StallWatch(
            self.rank, self.size, stall_timeout(timeout) if self.size > 1 else None
        )
        if abort_on_error and self.size > 1:
            install_abort_hook(self)

    def _allreduce_host(self, buf: HostArray) -> None:
        with self.stall.waiting():
            self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)

    def start_reduce(self, part: HostArray) -> Any:
        start = time.perf_counter()
        request = self.comm.Iallreduce(self.MPI.IN_PLACE, part, op=self.MPI.SUM)
        self.reduce_seconds += time.perf_counter() - start
        return request

    def progress(self, requests: list[Any]) -> None:
        start = time.perf_counter()
        self.MPI.Request.Testall(requests)
        self.reduce_seconds += time.perf_counter() - start

    def finish_reduce(self, requests: list[Any], stop: float, nbytes: int) -> float:
        start = time.perf_counter()
        flag = np.array([stop], dtype=np.float64)
        with self.stall.waiting():
            self.MPI.Request.Waitall(
                [
                    *requests,
                    self.comm.Iallreduce(self.MPI.IN_PLACE, flag, op=self.MPI.SUM),
                ]
            )
        self.reduce_seconds += time.perf_counter() - start
        self.reduce_calls += 1
        self.reduce_bytes += nbytes
        return float(flag[0])

    def ranks_on_this_host(self) -> int:
        """How many ranks share this rank's node (collective)."""
        with self.stall.waiting():
            local = self.comm.Split_type(self.MPI.COMM_TYPE_SHARED)
        try:
            return int(local.Get_size())
        finally:
            local.Free()

    def allgather(self, value: Any) -> list[Any]:
        with self.stall.waiting():
            return list(self.comm.allgather(value))

    def bcast_array(self, host: HostArray, root: int = 0) -> HostArray:
        with self.stall.waiting():
            self.comm.Bcast(host, root=root)
        return host

    def abort(self, code: int = 1) -> NoReturn:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        self.comm.Abort(code)
        raise SystemExit(code)  # not reached: Abort ends the process


def install_abort_hook(comm: MPICommunicator) -> None:
    """Make an uncaught exception on this rank print its traceback and then
    abort every rank (``MPI_Abort``), so none is left waiting forever."""
    previous = sys.excepthook

    def hook(
        kind: type[BaseException], value: BaseException, tb: TracebackType | None
    ) -> None:
        previous(kind, value, tb)
        comm.abort(1)

    sys.excepthook = hook


def local_rank(default: int = 0) -> int:
    """This process's rank on its node, from the launcher's environment (Open
    MPI, MPICH/Intel MPI, Slurm), e.g. to pick ``cuda:<local rank>``."""
    for name in LOCAL_RANK_VARIABLES:
        value = os.environ.get(name)
        if value is not None and value.strip().isdigit():
            return int(value)
    return default
