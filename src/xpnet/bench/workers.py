"""Where each system runs: in a spawned worker process of its own (the default)
or in this process (``--in-process``), behind one interface, :class:`System`.

Separate processes keep the thread pools of different libraries (OpenBLAS,
PyTorch's OpenMP/MKL) from sharing a process or spinning against each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from .. import backend as _backend
from ..errors import XpnetError
from .cores import pin_threads, spawn_environment, system_facts, timed_cpus
from .data import load_data
from .machine import measure_gemm
from .peers import requested_threads
from .plan import Plan
from .runners import Runner, State, make_runner, runner_extras
from .timing import EpochTiming, timed_epoch

#: host data of one (rows, synthetic) choice, kept between rows
_DataCache = dict[tuple[int, bool], tuple[np.ndarray, np.ndarray]]


class System(Protocol):
    """One system on one device, driven row by row by :func:`run.run_plan`.

    ``setup`` builds the runner of a row (keyword arguments: ``sizes, rows,
    synthetic, batch_size, lr, state``) and returns xpnet's initial weights
    (None for peers); ``close`` ends the row; ``shutdown`` ends the system;
    ``facts`` says what it runs with (:func:`.cores.system_facts`).
    """

    system: str

    def setup(self, **kw: Any) -> State | None: ...

    def facts(self) -> dict[str, Any]: ...

    def gemm(self, n: int) -> dict[str, Any]: ...

    def epoch(self) -> EpochTiming: ...

    def extras(self) -> dict[str, Any]: ...

    def close(self) -> None: ...

    def shutdown(self) -> None: ...


def _cached_data(cache: _DataCache, rows: int, synthetic: bool) -> tuple[Any, Any]:
    key = (rows, synthetic)
    if key not in cache:
        cache.clear()
        cache[key] = load_data(rows, synthetic)[:2]
    return cache[key]


def _setup(
    system: str,
    backend: _backend.Backend,
    cache: _DataCache,
    kw: dict[str, Any],
    worker: bool = False,
) -> tuple[Runner, State | None]:
    X, y = _cached_data(cache, kw["rows"], kw["synthetic"])
    runner = make_runner(
        system,
        kw["sizes"],
        X,
        y,
        kw["batch_size"],
        backend,
        kw["state"],
        kw["lr"],
        worker=worker,
    )
    return runner, runner.initial_state() if system == "xpnet" else None


def _need(runner: Runner | None) -> Runner:
    if runner is None:
        raise XpnetError("no runner: call setup first")
    return runner


def worker_main(
    conn: Any, system: str, device: str, cpus: tuple[int, ...] | None = None
) -> None:
    """Loop of a worker process: one system, commands from the parent's pipe.

    With ``cpus`` every thread of the process is bound to that CPU set, at the
    start and again after each row's set-up (a library may start its thread
    pool only when first used)."""
    cache: _DataCache = {}
    runner: Runner | None = None
    if cpus is not None:
        pin_threads(cpus)
    backend = _backend.resolve(device)
    while True:
        cmd, kw = conn.recv()
        value: Any = None
        try:
            if cmd == "exit":
                conn.send((True, None))
                return
            if cmd == "setup":
                runner, value = _setup(system, backend, cache, kw, worker=True)
                if cpus is not None:
                    pin_threads(cpus)
            elif cmd == "facts":
                value = system_facts(cpus)
            elif cmd == "epoch":
                value = tuple(timed_epoch(_need(runner)))
            elif cmd == "extras":
                value = runner_extras(_need(runner))
            elif cmd == "close":
                if runner is not None:
                    runner.close()
                runner = None
            elif cmd == "gemm":
                value = measure_gemm(system, backend, kw["n"])
            else:
                raise XpnetError(f"unknown worker command {cmd!r}")
            conn.send((True, value))
        except Exception as exc:  # reported to the parent, which raises
            conn.send((False, f"{system} on {device}: {type(exc).__name__}: {exc}"))


class Worker:
    """One system in its own spawned process (see the module's docstring),
    bound to ``cpus`` (None: unbound); ``native_blas`` spawns it without the
    variables that force a BLAS kernel (:func:`.cores.spawn_environment`)."""

    def __init__(
        self,
        system: str,
        device: str,
        cpus: tuple[int, ...] | None = None,
        native_blas: bool = False,
    ):
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self.system = system
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(
            target=worker_main, args=(child, system, device, cpus), daemon=True
        )
        with spawn_environment(native_blas):
            self.proc.start()
        child.close()

    def call(self, cmd: str, **kw: Any) -> Any:
        self.conn.send((cmd, kw))
        ok, value = self.conn.recv()
        if not ok:
            raise XpnetError(value)
        return value

    def setup(self, **kw: Any) -> State | None:
        return self.call("setup", **kw)

    def gemm(self, n: int) -> dict[str, Any]:
        return self.call("gemm", n=n)

    def facts(self) -> dict[str, Any]:
        return self.call("facts")

    def epoch(self) -> EpochTiming:
        return EpochTiming(*self.call("epoch"))

    def extras(self) -> dict[str, Any]:
        return self.call("extras")

    def close(self) -> None:
        self.call("close")

    def shutdown(self) -> None:
        try:
            self.call("exit")
        except Exception:
            pass
        self.proc.join(timeout=10)
        if self.proc.is_alive():
            self.proc.terminate()


class LocalSystem:
    """In-process stand-in for :class:`Worker` (``--in-process``)."""

    def __init__(self, system: str, device: str):
        self.system = system
        self.backend = _backend.resolve(device)
        self.runner: Runner | None = None
        self._data: _DataCache = {}

    def gemm(self, n: int) -> dict[str, Any]:
        return measure_gemm(self.system, self.backend, n)

    def facts(self) -> dict[str, Any]:
        return system_facts(None)  # in-process: not bound

    def setup(self, **kw: Any) -> State | None:
        self.runner, state = _setup(self.system, self.backend, self._data, kw)
        return state

    def epoch(self) -> EpochTiming:
        return timed_epoch(_need(self.runner))

    def extras(self) -> dict[str, Any]:
        return runner_extras(_need(self.runner))

    def close(self) -> None:
        if self.runner is not None:
            self.runner.close()
        self.runner = None

    def shutdown(self) -> None:
        self.close()


def start_systems(systems: Sequence[str], device: str, plan: Plan) -> dict[str, System]:
    """A :class:`Worker` per system (or a :class:`LocalSystem` without
    ``plan.isolate``); on a failed start the ones already started are stopped.

    Every worker is bound to the same CPU set, :func:`.cores.timed_cpus` of
    the thread count asked for (OMP/OPENBLAS/MKL_NUM_THREADS; all CPUs when
    none is), so that a system that ignores a thread flag cannot use more."""
    if not plan.isolate:
        return {name: LocalSystem(name, device) for name in systems}
    cpus = timed_cpus(requested_threads())
    workers: dict[str, System] = {}
    try:
        for name in systems:
            workers[name] = Worker(name, device, cpus, plan.native_blas)
    except BaseException:
        for w in workers.values():
            w.shutdown()
        raise
    return workers
