"""Clocks: timing an epoch, telling whether other processes disturbed it, waiting
for a quiet machine, and the interleaved warm-up + median protocol.

CPU use comes from ``/proc/stat`` and ``/proc/self/stat`` (Linux); elsewhere
contention is not checked.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, Protocol

from ..errors import XpnetError
from .cores import cores_used
from .runners import Runner, runner_extras

#: other processes using more CPU cores than this during an epoch discard it
CONTENTION_CORES = 0.25
#: the machine counts as quiet when all processes together use fewer cores
QUIET_CORES = 0.2
#: kernel clock ticks per second, the unit of ``/proc`` CPU times
TICKS_PER_S = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class EpochTiming(NamedTuple):
    """One timed epoch: wall seconds, mean loss, the CPU cores that other
    processes used meanwhile (``None`` where ``/proc`` is unavailable), and the
    cores the timed process itself kept busy (its CPU time, every thread, over
    the wall time; see :mod:`.cores`)."""

    seconds: float
    loss: float
    foreign_cores: float | None
    cores_used: float | None = None


class EpochSource(Protocol):
    """Anything that trains and times one epoch (:class:`InProcess`, a worker)."""

    def epoch(self) -> EpochTiming: ...


def cpu_ticks() -> tuple[int, int] | None:
    """``(busy ticks of the whole machine, ticks of this process)`` or None.

    From ``/proc/stat`` (all CPUs: user, nice, system, irq, softirq, steal) and
    ``/proc/self/stat`` (utime + stime of every thread of this process).
    """
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            vals = [int(v) for v in fh.readline().split()[1:9]]
        with open("/proc/self/stat", encoding="ascii") as fh:
            text = fh.read()
    except (OSError, ValueError):
        return None
    fields = text[text.rfind(")") + 2 :].split()
    busy = sum(vals) - vals[3] - vals[4]  # minus idle and iowait
    return busy, int(fields[11]) + int(fields[12])


def foreign_cores(
    before: tuple[int, int] | None, after: tuple[int, int] | None, seconds: float
) -> float | None:
    """Average CPU cores used by other processes between two :func:`cpu_ticks`."""
    if before is None or after is None or seconds <= 0:
        return None
    foreign = (after[0] - before[0]) - (after[1] - before[1])
    return max(foreign, 0) / TICKS_PER_S / seconds


def contended(foreign: float | None, seconds: float) -> bool:
    """Whether other processes used > :data:`CONTENTION_CORES` cores during an
    epoch, by more than the ticks' granularity can explain."""
    if foreign is None:
        return False
    return foreign > CONTENTION_CORES and foreign * seconds * TICKS_PER_S > 5


def timed_epoch(runner: Runner) -> EpochTiming:
    """Time one epoch; runners synchronise their device before returning."""
    before = cpu_ticks()
    cpu_start = time.process_time()
    start = time.perf_counter()
    loss = runner.run_epoch()
    seconds = time.perf_counter() - start
    used = cores_used(time.process_time() - cpu_start, seconds)
    return EpochTiming(seconds, loss, foreign_cores(before, cpu_ticks(), seconds), used)


def wait_for_quiet(max_wait: float = 60.0, window: float = 0.5) -> float:
    """Wait until the machine is idle apart from us (busy < :data:`QUIET_CORES`
    over a ``window`` of seconds), at most ``max_wait`` seconds; returns the
    seconds waited."""
    start = time.perf_counter()
    while True:
        a = cpu_ticks()
        if a is None:
            return 0.0
        time.sleep(window)
        b = cpu_ticks()
        if b is None or (b[0] - a[0]) / TICKS_PER_S / window < QUIET_CORES:
            return time.perf_counter() - start
        if time.perf_counter() - start > max_wait:
            return time.perf_counter() - start


class InProcess:
    """A :class:`Runner` driven in this process (tests, ``--in-process``)."""

    def __init__(self, runner: Runner):
        self.runner = runner

    def epoch(self) -> EpochTiming:
        return timed_epoch(self.runner)

    def extras(self) -> dict[str, Any]:
        return runner_extras(self.runner)

    def close(self) -> None:
        self.runner.close()


def time_runners(
    systems: Mapping[str, Runner | EpochSource],
    repeats: int = 3,
    warmup: int = 1,
    max_retries: int = 6,
    settle_s: float = 0.0,
    on_contention: Callable[[str, EpochTiming], None] | None = None,
    quiet_wait_s: float = 60.0,
) -> dict[str, dict[str, Any]]:
    """Warm up, then time ``repeats`` epochs of every system, interleaved.

    ``systems`` maps a name to a :class:`Runner`, or to anything with an
    ``epoch() -> EpochTiming`` method (:class:`InProcess`, a worker).
    Epochs during which other processes used the CPU (see :func:`contended`)
    are discarded and re-run, at most ``max_retries`` times per row in all;
    after that they are kept and the system is marked ``contended``.
    ``settle_s`` sleeps between epochs so that idle thread pools stop spinning;
    before a re-run it waits up to ``quiet_wait_s`` for a quiet machine.

    Returns per system ``{"times", "median_s", "losses", "warmup_s",
    "foreign_cores", "cores_used", "discarded", "contended"}``.
    """
    if repeats < 1:
        raise XpnetError(f"repeats must be >= 1, got {repeats}")
    sources: dict[str, EpochSource] = {
        k: InProcess(v) if isinstance(v, Runner) else v for k, v in systems.items()
    }
    out: dict[str, dict[str, Any]] = {
        name: {
            "times": [],
            "losses": [],
            "warmup_s": [],
            "foreign_cores": [],
            "cores_used": [],
            "discarded": [],
            "contended": False,
        }
        for name in sources
    }
    retries = 0
    for _ in range(warmup):
        for name, system in sources.items():
            if settle_s:
                time.sleep(settle_s)
            out[name]["warmup_s"].append(system.epoch().seconds)
    for _ in range(repeats):
        for name, system in sources.items():
            while True:
                if settle_s:
                    time.sleep(settle_s)
                t = system.epoch()
                if contended(t.foreign_cores, t.seconds) and retries < max_retries:
                    retries += 1
                    out[name]["discarded"].append(
                        {"seconds": t.seconds, "foreign_cores": t.foreign_cores}
                    )
                    if on_contention is not None:
                        on_contention(name, t)
                    if quiet_wait_s > 0:
                        wait_for_quiet(max_wait=quiet_wait_s)
                    continue
                if contended(t.foreign_cores, t.seconds):
                    out[name]["contended"] = True
                break
            out[name]["times"].append(t.seconds)
            out[name]["losses"].append(t.loss)
            out[name]["foreign_cores"].append(t.foreign_cores)
            out[name]["cores_used"].append(t.cores_used)
    for name in sources:
        out[name]["median_s"] = statistics.median(out[name]["times"])
    return out
