"""One ``mpiexec -n N`` job of the scaling benchmark, driven like a worker.

The parent (:class:`MPIJob`) listens on a localhost socket and launches
``mpiexec -n N python -m xpnet.bench.mpijob HOST PORT`` with ``T`` BLAS
threads per rank (``OMP/OPENBLAS/MKL_NUM_THREADS``); every rank connects back
(an authenticated :mod:`multiprocessing.connection`) and then runs the
parent's commands (``setup``, ``epoch``, ``allreduce``, ``close``, ``exit``).
Every rank gets each command itself, over its own socket, so a rank waiting
for the next command blocks in ``recv`` instead of spinning in an MPI
collective (MPICH polls busily), which would disturb the epochs of the
other jobs timed in between.

Every answer is awaited with a timeout (:data:`TIMEOUT_S`, start-up
:data:`STARTUP_S`); a job that misses it, loses a rank or reports an error is
killed and the parent raises one :class:`~xpnet.errors.XpnetError` line with
the end of mpiexec's output.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from multiprocessing.connection import Client, Connection, Listener, wait
from typing import TYPE_CHECKING, Any, NoReturn, cast

from ..errors import XpnetError
from .peers import THREAD_VARS
from .timing import TICKS_PER_S, EpochTiming

if TYPE_CHECKING:
    from .workers import _DataCache

#: seconds any one command (a whole epoch included) may take on every rank
TIMEOUT_S = 300.0
#: seconds for mpiexec to start every rank and for each to connect back
STARTUP_S = 120.0
#: the environment variable that hands the connection's key to the ranks
AUTHKEY_VAR = "XPNET_BENCH_AUTHKEY"
#: the end of mpiexec's output quoted in an error, in characters
OUTPUT_TAIL = 600


class MPIJob:
    """``ranks`` processes under ``mpiexec``, ``threads`` BLAS threads each.

    Implements what :func:`xpnet.bench.timing.time_runners` needs
    (:meth:`epoch`) and the row's set-up; :attr:`details` keeps every rank's
    figures of every epoch (see :meth:`epoch`).
    """

    def __init__(
        self,
        name: str,
        ranks: int,
        threads: int,
        mpiexec: str = "mpiexec",
        overlap: bool = False,
    ) -> None:
        self.name, self.ranks, self.threads = name, ranks, threads
        self.details: list[dict[str, Any]] = []
        self.conns: list[Connection] = []
        key = os.urandom(16)
        self.listener = Listener(("127.0.0.1", 0), authkey=key)
        host, port = self.listener.address
        env = {**os.environ, AUTHKEY_VAR: key.hex()}
        env.update((var, str(threads)) for var in THREAD_VARS)
        self.output = tempfile.TemporaryFile()
        command = [mpiexec, "-n", str(ranks), sys.executable, "-m", __name__]
        try:
            self.proc = subprocess.Popen(
                [*command, host, str(port), *(["--overlap"] if overlap else [])],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=self.output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: killed as one
            )
        except OSError as exc:
            self.listener.close()
            raise XpnetError(f"{name}: cannot start {mpiexec} ({exc})") from None
        try:
            self._connect()
        except BaseException:
            self.kill()
            raise

    def _connect(self) -> None:
        conns: list[Connection] = []

        def accept() -> None:
            try:
                for _ in range(self.ranks):
                    conns.append(self.listener.accept())
            except OSError:  # the listener closed, or a bad key
                pass

        # accept() has no timeout of its own: wait for it in a thread.
        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        deadline = time.monotonic() + STARTUP_S
        while thread.is_alive() and time.monotonic() < deadline:
            thread.join(0.2)
            if self.proc.poll() is not None:
                break
        if len(conns) < self.ranks:
            self._fail(
                f"{len(conns)} of {self.ranks} ranks connected within {STARTUP_S:.0f} s"
            )
        hello = self._gather(conns, "start-up", STARTUP_S)
        order = sorted(hello, key=lambda i: hello[i]["rank"])
        self.conns = [conns[i] for i in order]
        #: each rank's hello: rank, size, pid, blas_threads
        self.info = [hello[i] for i in order]

    def _gather(
        self, conns: list[Connection], what: str, timeout: float
    ) -> dict[Any, Any]:
        """One answer from each of ``conns`` -> ``{index in conns: value}``
        (at ``start-up`` the rank's hello), or :meth:`_fail`."""
        pending = {c: i for i, c in enumerate(conns)}
        out: dict[Any, Any] = {}
        deadline = time.monotonic() + timeout
        while pending:
            left = deadline - time.monotonic()
            if left <= 0:
                self._fail(f"no answer to {what} within {timeout:.0f} s")
            ready = wait(list(pending), timeout=min(left, 1.0))
            if not ready and self.proc.poll() is not None:
                self._fail(f"mpiexec ended (exit {self.proc.returncode}) during {what}")
            for item in ready:
                conn = cast(Connection, item)
                index = pending.pop(conn)
                try:
                    message = conn.recv()
                except (EOFError, OSError):
                    self._fail(f"rank {index} hung up during {what}")
                if what == "start-up":
                    out[index] = message
                    continue
                ok, value = message
                if not ok:
                    self._fail(value)
                out[index] = value
        return out

    def call(self, cmd: str, timeout: float = TIMEOUT_S, **kw: Any) -> list[Any]:
        """Run ``cmd`` on every rank; their answers in rank order."""
        for conn in self.conns:
            conn.send((cmd, kw))
        answers = self._gather(self.conns, repr(cmd), timeout)
        return [answers[r] for r in range(self.ranks)]

    # -- what the row loop calls -------------------------------------------------
    def setup(self, **kw: Any) -> None:
        self.details = []
        self.call("setup", **kw)

    def epoch(self) -> EpochTiming:
        """One epoch on every rank: its time is the slowest rank's epoch.

        Other processes' CPU use is the whole machine's (rank 0's view) minus
        every rank's own, so the ranks of this job do not count as contention.
        """
        ranks = self.call("epoch")
        seconds = max(r["epoch_s"] for r in ranks)
        busy = ranks[0]["machine_ticks"]
        foreign = None
        if busy is not None and all(r["own_ticks"] is not None for r in ranks):
            own = sum(r["own_ticks"] for r in ranks)
            window = ranks[0]["fit_s"]
            foreign = max(busy - own, 0) / TICKS_PER_S / window if window > 0 else None
        self.details.append({"seconds": seconds, "ranks": ranks})
        return EpochTiming(seconds, float(ranks[0]["loss"]), foreign)

    def allreduce(self, params: int, repeats: int) -> list[float]:
        """Seconds of ``repeats`` gradient all-reduces of ``params`` float32
        values (each after a barrier, so nobody waits): the slowest rank's."""
        times = self.call("allreduce", params=params, repeats=repeats)
        return [max(per_rank) for per_rank in zip(*times, strict=True)]

    def close(self) -> None:
        self.call("close")

    def shutdown(self) -> None:
        """End the job: ``exit`` to every rank, else kill it."""
        if self.proc.poll() is None:
            try:
                self.call("exit", timeout=30.0)
                self.proc.wait(timeout=30.0)
            except (XpnetError, OSError, subprocess.TimeoutExpired):
                pass
        self.kill()

    def kill(self) -> None:
        """Kill mpiexec and its ranks (its process group) if still running."""
        if self.proc.poll() is None:
            for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
                try:
                    os.killpg(self.proc.pid, sig)
                    self.proc.wait(timeout=grace)
                    break
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    continue
        for conn in self.conns:
            conn.close()
        self.listener.close()

    def _fail(self, why: str) -> NoReturn:
        self.kill()
        self.output.seek(0)
        tail = self.output.read().decode("utf-8", "replace").strip()[-OUTPUT_TAIL:]
        tail = " | ".join(line for line in tail.splitlines() if line.strip())
        raise XpnetError(
            f"{self.name} (mpiexec -n {self.ranks}, {self.threads} thread(s) per "
            f"rank): {why}" + (f"; its output ends: {tail}" if tail else "")
        )


# ----------------------------------------------------------------- rank side


def blas_threads() -> int | None:
    """The threads of NumPy's BLAS pool (threadpoolctl), None if unknown."""
    try:
        from threadpoolctl import (  # type: ignore[import-untyped, import-not-found, unused-ignore]
            threadpool_info,
        )
    except ImportError:
        return None
    pools = [p for p in threadpool_info() if p.get("user_api") == "blas"]
    return int(pools[0]["num_threads"]) if pools else None


class RankRunner:
    """This rank's xpnet model, data and communicator for one row; ``cache``
    keeps the host data between rows (every batch size of a model uses it)."""

    def __init__(self, comm: Any, cache: _DataCache, **kw: Any) -> None:
        from .. import backend as _backend
        from .runners import XpnetRunner
        from .workers import _cached_data

        X, y = _cached_data(cache, kw["rows"], kw["synthetic"])
        self.comm = comm
        self.runner = XpnetRunner(
            kw["sizes"], X, y, kw["batch_size"], _backend.resolve("cpu"), lr=kw["lr"]
        )

    def epoch(self) -> dict[str, Any]:
        """One ``fit(epochs=1)`` with the communicator; this rank's figures:
        ``epoch_s`` (the epoch loop, ``History`` seconds), ``fit_s`` (the
        whole call: start-up checks and broadcast too), ``loss``, ``samples``
        (this rank's), the all-reduce timer's ``reduce_s``, ``reduce_calls``,
        ``reduce_bytes`` in the epoch, and CPU ticks (machine, own)."""
        from .timing import cpu_ticks

        comm, r = self.comm, self.runner
        timer = (comm.reduce_seconds, comm.reduce_calls, comm.reduce_bytes)
        ticks = cpu_ticks()
        start = time.perf_counter()
        history = r.model.fit(
            r.X,
            r.y,
            epochs=1,
            batch_size=r.batch_size,
            check_inputs=False,
            communicator=comm,
        )
        fit_s = time.perf_counter() - start
        after = cpu_ticks()
        record = history.records[-1]
        return {
            "rank": comm.rank,
            "epoch_s": float(record["seconds"]),
            "fit_s": fit_s,
            "loss": float(record["loss"]),
            "samples": int(record.get("samples", r.X.shape[0])),
            "reduce_s": comm.reduce_seconds - timer[0],
            "reduce_calls": comm.reduce_calls - timer[1],
            "reduce_bytes": comm.reduce_bytes - timer[2],
            "machine_ticks": after[0] - ticks[0] if ticks and after else None,
            "own_ticks": after[1] - ticks[1] if ticks and after else None,
        }

    def close(self) -> None:
        self.runner.close()


def allreduce_times(comm: Any, params: int, repeats: int) -> list[float]:
    """Seconds of ``repeats`` :meth:`reduce_step` calls (after a warm-up) on
    ``params`` float32 zeros, each after a barrier: the all-reduce of a step
    (host staging included) without waiting for a slower rank."""
    import numpy as np

    from .. import backend as _backend

    backend = _backend.resolve("cpu")
    grads = np.zeros(params, dtype=np.float32)
    times = []
    for _ in range(repeats + 1):
        comm.comm.Barrier()
        start = time.perf_counter()
        comm.reduce_step(grads, 0.0, backend)
        times.append(time.perf_counter() - start)
    return times[1:]


def rank_main(argv: list[str]) -> int:
    """``mpiexec -n N python -m xpnet.bench.mpijob HOST PORT [--overlap]``:
    serve the parent's commands until ``exit``."""
    from ..distributed.mpi import MPICommunicator

    host, port = argv[0], int(argv[1])
    key = bytes.fromhex(os.environ.pop(AUTHKEY_VAR))
    comm = MPICommunicator(overlap="--overlap" in argv[2:])
    conn = Client((host, port), authkey=key)
    conn.send(
        {
            "rank": comm.rank,
            "size": comm.size,
            "pid": os.getpid(),
            "blas_threads": blas_threads(),
        }
    )
    runner: RankRunner | None = None
    cache: _DataCache = {}
    while True:
        cmd, kw = conn.recv()
        try:
            value: Any = None
            if cmd == "exit":
                conn.send((True, None))
                return 0
            if cmd == "setup":
                runner = RankRunner(comm, cache, **kw)
            elif cmd == "epoch":
                if runner is None:
                    raise XpnetError("no row set up")
                value = runner.epoch()
            elif cmd == "allreduce":
                value = allreduce_times(comm, kw["params"], kw["repeats"])
            elif cmd == "close":
                if runner is not None:
                    runner.close()
                runner = None
            else:
                raise XpnetError(f"unknown command {cmd!r}")
            conn.send((True, value))
        except Exception as exc:  # reported to the parent, which ends the job
            conn.send((False, f"rank {comm.rank}: {type(exc).__name__}: {exc}"))


if __name__ == "__main__":
    sys.exit(rank_main(sys.argv[1:]))
