"""How many BLAS threads ``xpnet train`` uses on the CPU.

OpenBLAS starts one thread per core and its threads wait for each other by
spinning; when other processes keep cores busy, a BLAS thread that lost its
core holds up the rest, and a multi-threaded matmul can run many times
slower than one thread (measured on a 2-core VM: see the README). So when the
1-minute load average shows other work, ``xpnet train`` gives the BLAS only
the cores left over (at least one); on an idle machine it keeps the
library's default. Thread settings the user made (``OPENBLAS_NUM_THREADS``,
``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``) are always kept.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

__all__ = ["USER_SETTINGS", "blas_threads_for", "limited_blas_threads"]

#: environment variables by which a user sets BLAS threads: xpnet keeps them
USER_SETTINGS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def blas_threads_for(cpus: int, load: float) -> int | None:
    """BLAS threads for a machine with ``cpus`` cores whose 1-minute load
    average is ``load`` (runnable processes): the cores the others leave,
    at least 1; ``None`` (the library's default) when nothing else runs."""
    others = round(load)
    if others < 1:
        return None
    return max(1, cpus - others)


@contextlib.contextmanager
def limited_blas_threads() -> Iterator[int | None]:
    """Limit the BLAS's threads (see :func:`blas_threads_for`) while the
    block runs; yields the limit, or ``None`` where none was set (an idle
    machine, a user setting, no load average on this system)."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # Windows has no load average
        load = 0.0
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 0
    limit = blas_threads_for(cpus or os.cpu_count() or 1, load)
    if limit is None or any(os.environ.get(name) for name in USER_SETTINGS):
        yield None
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=limit, user_api="blas"):
        yield limit
