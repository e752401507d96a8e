"""How many BLAS threads ``xpnet train`` uses on the CPU.

OpenBLAS starts one thread per core and its threads wait for each other by
spinning; when other processes keep cores busy, a BLAS thread that lost its
core holds up the rest, and a multi-threaded matmul can run several times
slower than one thread (measured on a 2-core VM: see the README). With
``--blas-threads auto``, when other processes are running, ``xpnet train``
gives the BLAS only the cores they leave (at least one); on an idle machine it
keeps the library's default. It is not the default because the thread count
changes how a matmul splits its sums, so float32 results would depend on the
machine's load at start (measured: the third epoch's loss differs in the 7th
digit between 1 and 2 OpenBLAS threads); by default the BLAS keeps its own
count, and a busy CPU gets a one-line hint instead.
"Running" is what the kernel counts as runnable right now (Linux's
``/proc/loadavg``, a few looks): a 1-minute load average would also count the
run that just finished, and so slow down back-to-back runs on an idle
machine; it is used only where there is no ``/proc``. Thread settings the
user made (``OPENBLAS_NUM_THREADS``, ``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``)
are always kept.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections.abc import Iterator

__all__ = [
    "USER_SETTINGS",
    "blas_threads_for",
    "busy_cpu_hint",
    "cpu_count",
    "limited_blas_threads",
    "other_running_processes",
    "user_setting",
]

#: environment variables by which a user sets BLAS threads: xpnet keeps them
USER_SETTINGS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def blas_threads_for(cpus: int, others: float) -> int | None:
    """BLAS threads for a machine with ``cpus`` cores where ``others``
    processes besides this one are running: the cores they leave, at least
    1; ``None`` (the library's default) when nothing else runs."""
    busy = round(others)
    if busy < 1:
        return None
    return max(1, cpus - busy)


def other_running_processes(looks: int = 5, pause: float = 0.01) -> float:
    """How many processes (threads) besides this one use a CPU now: the
    median over ``looks`` looks, ``pause`` seconds apart, at Linux's count of
    runnable tasks; elsewhere the 1-minute load average; 0 if neither exists."""
    counts = []
    try:
        for _ in range(looks):
            with open("/proc/loadavg") as f:
                running = f.read().split()[3].split("/")[0]
            counts.append(int(running) - 1)  # this process is running too
            time.sleep(pause)
    except (OSError, ValueError, IndexError):
        try:
            return os.getloadavg()[0]
        except (AttributeError, OSError):  # Windows: no load average
            return 0.0
    return statistics.median(counts)


def user_setting() -> str | None:
    """The environment variable by which the user set BLAS threads, if any."""
    return next((name for name in USER_SETTINGS if os.environ.get(name)), None)


def cpu_count() -> int:
    """The cores this process may run on."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 0
    return cpus or os.cpu_count() or 1


@contextlib.contextmanager
def limited_blas_threads(setting: int | str = "auto") -> Iterator[int | None]:
    """Limit the BLAS's threads while the block runs: to ``setting`` threads,
    or with ``"auto"`` to the cores others leave (see
    :func:`blas_threads_for`). Yields the limit, or ``None`` where none was
    set (``auto`` on an idle machine, or a user's own environment setting,
    which always wins)."""
    if user_setting() is not None:
        yield None
        return
    if setting == "auto":
        limit = blas_threads_for(cpu_count(), other_running_processes())
    else:
        limit = int(setting)
    if limit is None:
        yield None
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=limit, user_api="blas"):
        yield limit


def busy_cpu_hint() -> str | None:
    """A one-line hint when other processes keep the CPU busy and nobody
    chose the BLAS threads, else ``None``."""
    if user_setting() is not None:
        return None
    limit = blas_threads_for(cpu_count(), other_running_processes())
    if limit is None:
        return None
    return (
        f"the CPU is busy with other processes; --blas-threads auto (here "
        f"{limit}) is often several times faster, at the cost of float32 results "
        "that depend on the thread count"
    )
