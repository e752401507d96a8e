"""Which peers (PyTorch, scikit-learn, NumPy, JAX) can run where, and why not;
how a peer's threads are pinned.

Imports a peer only when asked about it, so that naming peers costs nothing.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Sequence
from types import ModuleType

from ..errors import XpnetError
from .plan import CUDA_ONLY_PEERS, PEERS, PEERS_TEXT


def module_version(name: str) -> str | None:
    """``name.__version__`` (``"?"`` when absent), or None if it cannot import."""
    try:
        module = importlib.import_module(name)
    except Exception:
        return None
    return str(getattr(module, "__version__", "?"))


def import_torch() -> ModuleType | None:
    """The ``torch`` module, or None when it is missing or broken."""
    if importlib.util.find_spec("torch") is None:
        return None
    try:
        import torch
    except Exception:
        return None
    return torch


#: the XLA flags commonly given to keep XLA's CPU backend on one thread
XLA_ONE_THREAD_FLAGS = (
    "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
)
#: environment variables that ask BLAS/OpenMP pools for a thread count
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def requested_threads() -> int | None:
    """The thread count asked for with :data:`THREAD_VARS` (first one set)."""
    for var in THREAD_VARS:
        value = os.environ.get(var, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return None


def pin_jax_threads(worker: bool) -> str:
    """Ask JAX for one thread when one is asked for; call before JAX starts.

    Sets :data:`XLA_ONE_THREAD_FLAGS` in ``XLA_FLAGS`` (kept if already set).
    Measured with jaxlib 0.10.2 on 2 cores: those flags alone still run a
    2048^3 matmul on two cores (CPU time / wall time 1.95). What holds it to
    its share is the CPU set that every timed worker process is bound to,
    all its threads (:func:`.cores.pin_threads`, like ``taskset -c``), and
    the cores it used are recorded per epoch. Returns a one-line
    description of what was done, for the results.
    """
    if requested_threads() != 1:
        return "jax threads: not pinned (no one-thread request in " + (
            "/".join(THREAD_VARS) + ")"
        )
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_multi_thread_eigen" not in flags:
        os.environ["XLA_FLAGS"] = (flags + " " + XLA_ONE_THREAD_FLAGS).strip()
    if not worker:
        return "jax threads: XLA_FLAGS only (no CPU binding in-process)"
    return "jax threads: XLA_FLAGS, and the worker's CPU set like every system"


def peer_skip_reason(peer: str, device: str) -> str | None:
    """Why ``peer`` cannot run on ``device`` (``"cpu"``/``"cuda:N"``), or None."""
    if peer == "sklearn":
        if device != "cpu":
            return f"skipped on {device} (CPU only)"
        if importlib.util.find_spec("sklearn") is None:
            return "skipped (scikit-learn not installed)"
        return None
    if peer in CUDA_ONLY_PEERS and device == "cpu":
        return "skipped on cpu (CUDA graphs: GPUs only)"
    if peer in ("pytorch", *CUDA_ONLY_PEERS):
        torch = import_torch()
        if torch is None:
            return "skipped (torch not installed)"
        if device != "cpu":
            if not torch.cuda.is_available():
                return f"skipped on {device} (this torch build sees no CUDA GPU)"
            index = int(device.split(":")[1]) if ":" in device else 0
            if index >= torch.cuda.device_count():
                return f"skipped on {device} (torch sees no such GPU)"
        return None
    if peer == "numpy":
        if device != "cpu":
            return f"skipped on {device} (CPU only)"
        return None
    if peer == "jax":
        if device != "cpu":
            return f"skipped on {device} (CPU only in this benchmark)"
        if importlib.util.find_spec("jax") is None:
            return "skipped (jax not installed: pip install 'xpnet[bench]')"
        try:
            import jax  # noqa: F401  (importing starts no XLA backend yet)
        except Exception as exc:
            return f"skipped (jax does not import: {type(exc).__name__}: {exc})"
        return None
    raise XpnetError(f"unknown peer {peer!r}: choose from {PEERS_TEXT}")


def peer_messages(peers: Sequence[str], devices: Sequence[str]) -> list[str]:
    """One line per skipped peer and device, e.g. ``pytorch: skipped (...)``."""
    lines = []
    gpus = any(device != "cpu" for device in devices)
    for peer in PEERS:
        if peer in CUDA_ONLY_PEERS and not gpus:
            continue  # a CPU-only run says nothing of the GPU-only peers
        if peer not in peers:
            lines.append(f"{peer}: skipped (not requested with --peers)")
            continue
        seen = set()
        for device in devices:
            reason = peer_skip_reason(peer, device)
            if reason and reason not in seen:
                seen.add(reason)
                lines.append(f"{peer}: {reason}")
    return lines
