"""The machine under the numbers: software versions, CPU and GPU facts, BLAS
thread pools, and the device's measured GEMM rate (the ceiling that the
``% GEMM`` column compares an epoch with)."""

from __future__ import annotations

import contextlib
import datetime as _dt
import importlib.util
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .. import __version__
from .. import backend as _backend
from ..backend import Backend
from ..errors import XpnetError
from .peers import import_torch, module_version
from .timing import contended, cpu_ticks, foreign_cores


def measure_gemm(
    library: str, backend: Backend, n: int, repeats: int = 5
) -> dict[str, Any]:
    """Float32 ``n x n x n`` matmul rate of ``library`` on the device.

    ``gflops`` is from the fastest of ``repeats`` products: the rate is a
    ceiling, and on a shared machine other work only ever lowers a sample
    (a median taken while a neighbour ran once put it 40% low, and rows
    above 100% of it). ``gflops_median`` is kept too.
    ``library``: ``"xpnet"`` (the backend's namespace: NumPy or CuPy) or
    ``"pytorch"``. Inputs are standard-normal (no zeros, no denormals).
    ``foreign_cores`` is the CPU cores other processes used meanwhile and
    ``contended`` whether that was enough to lower the rate (see
    :func:`.timing.contended`); both from ``/proc`` (None/False elsewhere).
    """
    rng = np.random.default_rng(1)
    a_host = rng.standard_normal((n, n), dtype=np.float32)
    b_host = rng.standard_normal((n, n), dtype=np.float32)
    a: Any
    b: Any
    sync: Callable[[], None]
    # CuPy launches on the current device, which must be the operands' one
    # (cuda:1 with GPU 0 current fails, or copies through peer access).
    context: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
    if library == "xpnet":
        a, b = backend.asarray(a_host), backend.asarray(b_host)
        sync = backend.synchronize
        context = backend.context()
        what = f"{backend.name} matmul"
    elif library == "pytorch":
        import torch

        device = torch.device(backend.device_name)
        a = torch.from_numpy(a_host).to(device)
        b = torch.from_numpy(b_host).to(device)

        def sync() -> None:
            if device.type == "cuda":
                torch.cuda.synchronize(device)

        what = "torch matmul"
    else:
        raise XpnetError(f"unknown GEMM library {library!r}")
    times = []
    before = cpu_ticks()
    started = time.perf_counter()
    with context:
        for i in range(repeats + 1):
            sync()
            start = time.perf_counter()
            c = a @ b
            sync()
            if i:  # the first product is the warm-up
                times.append(time.perf_counter() - start)
            del c
    elapsed = time.perf_counter() - started
    foreign = foreign_cores(before, cpu_ticks(), elapsed)
    median = statistics.median(times)
    flops = 2 * n**3
    return {
        "what": what,
        "n": n,
        "times": times,
        "median_s": median,
        "best_s": min(times),
        "gflops": flops / min(times) / 1e9,
        "gflops_median": flops / median / 1e9,
        "foreign_cores": foreign,
        "contended": contended(foreign, elapsed),
    }


def cpu_model() -> str:
    """The CPU's model name (from ``/proc/cpuinfo`` where there is one)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def blas_info() -> dict[str, Any]:
    """NumPy's BLAS and, with threadpoolctl, every loaded BLAS/OpenMP pool."""
    info: dict[str, Any] = {}
    try:
        config: Any = np.show_config(mode="dicts")
        blas = config.get("Build Dependencies", {}).get("blas", {})
        info["numpy_blas"] = (
            f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
        )
    except Exception:
        pass
    try:
        from threadpoolctl import (  # type: ignore[import-untyped, import-not-found, unused-ignore]
            threadpool_info,
        )

        info["threadpools"] = [
            {
                k: p.get(k)
                for k in ("internal_api", "version", "num_threads", "architecture")
            }
            for p in threadpool_info()
        ]
    except Exception:
        pass
    return info


def gpu_info(devices: Sequence[str]) -> list[dict[str, Any]]:
    """:func:`xpnet.backend.gpu_facts` of each GPU in ``devices``, plus the
    ``nvidia-smi`` line (driver version) where that tool answers."""
    gpus = _backend.gpu_facts([d for d in devices if d != "cpu"])
    for entry in gpus:
        device = entry["device"]
        try:
            index = device.split(":")[1] if ":" in device else "0"
            result = subprocess.run(
                [
                    "nvidia-smi",
                    f"--id={index}",
                    "--query-gpu=name,driver_version,memory.total",
                    "--format=csv,noheader",
                ],
                capture_output=True,
                text=True,
                timeout=20,
                check=False,
            )
            if result.returncode == 0:
                entry["nvidia_smi"] = result.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return gpus


def _installed_version(name: str) -> str | None:
    return module_version(name) if importlib.util.find_spec(name) else None


def environment(devices: Sequence[str] = ("cpu",)) -> dict[str, Any]:
    """Machine and software facts for the results file."""
    torch = import_torch()
    try:
        affinity: int | None = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    env: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": affinity,
        "torch_threads": torch.get_num_threads() if torch is not None else None,
        "thread_env": {
            k: os.environ[k]
            for k in (
                "OMP_NUM_THREADS",
                "OPENBLAS_NUM_THREADS",
                "MKL_NUM_THREADS",
                "XLA_FLAGS",
            )
            if k in os.environ
        },
        "versions": {
            "python": platform.python_version(),
            "xpnet": __version__,
            "numpy": np.__version__,
            "array_api_compat": module_version("array_api_compat"),
            "cupy": _installed_version("cupy"),
            "torch": torch.__version__ if torch is not None else None,
            "sklearn": _installed_version("sklearn"),
            "jax": _installed_version("jax"),
            "matplotlib": _installed_version("matplotlib"),
        },
        "gpus": gpu_info(devices),
    }
    env.update(blas_info())
    return env
