"""The cores and the BLAS kernel each timed system gets.

Equal thread counts are not equal cores: a peer that ignores a thread flag
(XLA's CPU backend ran a "one-thread" matmul on two cores) would still use
more. So every timed worker process is bound to the same CPU set, every
thread of it (:func:`pin_threads`), and the cores it actually used (its CPU
time over the wall time of an epoch, :func:`cores_used`) are recorded and
checked against what it was given (:func:`over_cores`).

The BLAS kernel matters as much: ``OPENBLAS_CORETYPE=Haswell`` (set on some
machines to work around old OpenBLAS bugs) makes NumPy's OpenBLAS run its
AVX2 kernel on an AVX-512 CPU, about half the matmul speed a user gets.
:func:`forcing_variables` names such settings, :func:`pool_facts` reports
what each library actually loaded (threadpoolctl), :func:`native_kernel`
what OpenBLAS picks without them, and ``xpnet bench --native-blas`` drops
them for the timed workers alone (:func:`spawn_environment`), never for this
process or the tests.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

#: variables that force a BLAS or SIMD kernel (not a thread count)
KERNEL_VARS = (
    "OPENBLAS_CORETYPE",
    "OPENBLAS_L2_SIZE",
    "MKL_DEBUG_CPU_TYPE",
    "MKL_ENABLE_INSTRUCTIONS",
    "MKL_CBWR",
    "NPY_DISABLE_CPU_FEATURES",
    "ATEN_CPU_CAPABILITY",
)
#: variables that ask a BLAS, OpenMP or XLA pool for a thread count
THREAD_COUNT_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "GOTO_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "XLA_FLAGS",
)
#: a system may use this many cores above its CPU set before it is flagged
#: (interpreter and library housekeeping threads, tick granularity)
OVER_CORES_MARGIN = 0.25


def forcing_variables(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The kernel- and thread-forcing variables set in ``environ``."""
    environ = os.environ if environ is None else environ
    return {k: environ[k] for k in (*KERNEL_VARS, *THREAD_COUNT_VARS) if k in environ}


def forced_kernel(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The subset of :func:`forcing_variables` that forces a kernel."""
    environ = os.environ if environ is None else environ
    return {k: environ[k] for k in KERNEL_VARS if k in environ}


def available_cpus() -> list[int]:
    """The CPUs this process may run on (all of them where unknown)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


def timed_cpus(threads: int | None) -> tuple[int, ...]:
    """The CPU set every timed system gets: the first ``threads`` CPUs this
    process may use (all of them when no thread count is asked for)."""
    cpus = available_cpus()
    if threads is not None and threads > 0:
        cpus = cpus[:threads]
    return tuple(cpus)


def pin_threads(cpus: Sequence[int]) -> bool:
    """Bind every thread of this process to ``cpus``; False where the platform
    cannot. Threads started later inherit the binding of the thread that
    starts them, so calling this after a library has started its pool (and
    again before each row) covers the pools started at import and later."""
    if not hasattr(os, "sched_setaffinity"):
        return False
    target = set(cpus)
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        tids = [0]
    for tid in tids:
        try:
            os.sched_setaffinity(tid, target)
        except OSError:  # the thread ended meanwhile
            pass
    return True


@contextlib.contextmanager
def spawn_environment(native_blas: bool) -> Iterator[None]:
    """The environment a worker process is spawned with: this process's, less
    :data:`KERNEL_VARS` when ``native_blas``; restored afterwards (a spawned
    child copies the environment when it starts)."""
    saved = {
        k: os.environ.pop(k) for k in KERNEL_VARS if native_blas and k in os.environ
    }
    try:
        yield
    finally:
        os.environ.update(saved)


def pool_facts() -> list[dict[str, Any]]:
    """The BLAS/OpenMP pools loaded in this process (threadpoolctl): library,
    its kernel (``architecture``), version and threads; [] without it."""
    try:
        from threadpoolctl import (  # type: ignore[import-untyped, import-not-found, unused-ignore]
            threadpool_info,
        )
    except ImportError:
        return []
    keys = ("user_api", "internal_api", "version", "num_threads", "architecture")
    return [
        {**{k: p.get(k) for k in keys}, "file": os.path.basename(p.get("filepath", ""))}
        for p in threadpool_info()
    ]


def system_facts(cpus: Sequence[int] | None) -> dict[str, Any]:
    """What one timed system runs with: its CPU set (None: not pinned), the
    forcing variables it sees and the pools it loaded."""
    return {
        "cpus": list(cpus) if cpus is not None else None,
        "affinity": available_cpus(),
        "forcing": forcing_variables(),
        "pools": pool_facts(),
    }


def native_kernel(timeout: float = 60.0) -> str | None:
    """The kernel NumPy's OpenBLAS picks without :data:`KERNEL_VARS`, asked of
    a fresh interpreter (a loaded OpenBLAS keeps its kernel); None if unknown."""
    code = (
        "import numpy, threadpoolctl\n"
        "for p in threadpoolctl.threadpool_info():\n"
        "    if p.get('internal_api') == 'openblas':\n"
        "        print(p.get('architecture')); break\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in KERNEL_VARS}
    try:
        done = subprocess.run(
            [sys.executable, "-c", code],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


def cores_used(cpu_seconds: float, wall_seconds: float) -> float | None:
    """Average cores a process kept busy: its CPU time over the wall time."""
    return cpu_seconds / wall_seconds if wall_seconds > 0 else None


def over_cores(used: float | None, given: int | None) -> bool:
    """Whether a system used more cores than its CPU set holds."""
    if used is None or given is None:
        return False
    return used > given + OVER_CORES_MARGIN


def kernel_notice(forced: Mapping[str, str], native: str | None) -> str | None:
    """One line for a run whose BLAS kernel is forced: which variable forces
    it and how to measure the machine's own kernel; None when nothing is."""
    if not forced:
        return None
    settings = " ".join(f"{k}={v}" for k, v in forced.items())
    own = f" (OpenBLAS picks {native} without it)" if native else ""
    return (
        f"BLAS kernel forced by {settings}{own}: users' machines run their own "
        "kernel; measure it with xpnet bench --native-blas (drops these variables "
        "for the timed workers only)"
    )


def _pool_text(pool: Mapping[str, Any]) -> str:
    kernel = pool.get("architecture")
    return (
        f"{pool.get('internal_api')} {pool.get('version') or ''}".strip()
        + (f" {kernel}" if kernel else "")
        + f" x{pool.get('num_threads')}"
    )


def facts_lines(facts: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One line per system of :func:`system_facts`: its CPU set, its pools
    (library, version, kernel, threads) and the forcing variables it sees."""
    lines = []
    for name, f in facts.items():
        cpus = f.get("cpus")
        where = f"CPUs {','.join(map(str, cpus))}" if cpus else "not bound"
        pools = "; ".join(_pool_text(p) for p in f.get("pools", [])) or "no pools"
        forcing = " ".join(f"{k}={v}" for k, v in f.get("forcing", {}).items())
        lines.append(
            f"{name}: {where} | {pools}" + (f" | env {forcing}" if forcing else "")
        )
    return lines
