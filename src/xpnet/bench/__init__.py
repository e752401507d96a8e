"""Throughput benchmark: seconds per training epoch, xpnet against its peers.

One epoch = a fresh shuffle plus every step over the data, the last partial
batch included. Each system (xpnet, PyTorch eager, scikit-learn's
``MLPClassifier``) trains the same model from the same initial weights with the
same optimizer (SGD, momentum 0.9, constant learning rate) in float32, on the
same device, with its data already there. Each is warmed up for one epoch and
then timed for ``repeats`` epochs (median reported); the systems' epochs are
interleaved (xpnet, torch, sklearn, xpnet, ...) so that slow drifts of the
machine hit all of them alike. On a GPU the device is synchronised before the
clock is read.

Data: real MNIST pixels and labels (the 15,000 images of the bundled
``mnist-sample``, scaled to [0, 1] and tiled to 60,000 rows) or, with
``synthetic=True``, class-dependent Gaussian blobs. Never uniform noise: on data
with no structure ReLUs die, momentum buffers decay into float denormals and the
benchmark would time denormal arithmetic instead of training.

FLOPs count the matrix products only: forward ``2 N P`` and backward
``4 N P - 2 N d0 d1`` (no system computes the first layer's input gradient),
with ``P`` the number of weights (biases excluded) and ``N`` the rows.

Run it as ``xpnet bench`` (see :func:`add_bench_parser`) or
``python -m xpnet.bench``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib
import importlib.util
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .. import __version__
from .. import backend as _backend
from ..errors import DeviceError, XpnetError

SCHEMA = "xpnet-bench/1"

#: model name -> layer sizes (ReLU between Dense layers, softmax cross-entropy)
MODELS: dict[str, tuple[int, ...]] = {
    "seed": (784, 16, 16, 16, 10),
    "mlp512": (784, 512, 512, 10),
    "wide": (784, 4096, 4096, 10),
}
BATCH_SIZES = (32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
SYSTEMS = ("xpnet", "pytorch", "sklearn")
PEERS = ("pytorch", "sklearn")
_PEER_ALIASES = {"torch": "pytorch", "pytorch": "pytorch", "sklearn": "sklearn"}
_PEER_ALIASES["scikit-learn"] = "sklearn"

LR = 0.01
MOMENTUM = 0.9
DTYPE = "float32"
ROWS = 60_000
CLASSES = 10
SEED = 0
#: other processes using more CPU cores than this during an epoch discard it
CONTENTION_CORES = 0.25

#: what ``--quick`` changes (printed in the output)
QUICK = {
    "rows": 10_000,
    "batch_sizes": (128, 1024),
    "wide_rows": 256,
    "wide_batch_sizes": (128,),
}
QUICK_TEXT = (
    "quick mode: 10,000 rows per epoch and batch sizes 128, 1024 for seed and "
    "mlp512; wide on 256 rows at batch 128 only; repeats as given"
)

REAL_DATA_TEXT = "real MNIST (15k images tiled to {rows:,})"
SYNTHETIC_TEXT = (
    "synthetic (10 class-dependent Gaussian blobs in 784-d, {rows:,} rows; "
    "not real MNIST)"
)
TIMING_TEXT = (
    "timing: one warm-up epoch per system, then the median of {repeats} epochs, "
    "systems interleaved; an epoch = shuffle + every step (last partial batch "
    "included), data already on the device, device synchronised before the "
    "clock is read; xpnet is timed around Sequential.fit(epochs=1, "
    "check_inputs=False): the data was validated once when it was put on the "
    "device, as a multi-epoch fit() validates once per call"
)
FLOPS_TEXT = (
    "FLOPs count the matmuls only: forward 2*N*P, backward 4*N*P minus the "
    "first layer's input gradient (2*N*784*h1), P = weights without biases"
)
ISOLATION_TEXT = (
    "isolation: each system runs in its own worker process (spawned), so the "
    "thread pools of OpenBLAS and of PyTorch's OpenMP/MKL never share a process"
)
IN_PROCESS_TEXT = "isolation: none, all systems ran in one process (--in-process)"
CONTENTION_TEXT = (
    "contention: an epoch during which other processes used more than {cores} "
    "CPU cores (from /proc/stat) is discarded and re-run after the machine is "
    "quiet, at most {retries} times per row; rows marked * kept a contended epoch"
)
DENORMAL_TEXT = (
    "denormals: no system gets a CPU flush-to-zero switch (torch.set_flush_denormal "
    "stays off); xpnet flushes its own optimizer state every "
    "optimizers.FLUSH_EVERY updates as part of its normal training"
)


# --------------------------------------------------------------------------- FLOPs


def epoch_flops(sizes: Sequence[int], rows: int) -> dict[str, int]:
    """Matmul FLOPs of one training epoch of an MLP with layer ``sizes``.

    Forward ``2 N P``; backward ``4 N P`` (weight and input gradients) minus
    ``2 N d0 d1``, the first layer's input gradient, which nobody computes.
    Biases, activations, the loss and the optimizer are not counted.
    """
    sizes = [int(s) for s in sizes]
    if len(sizes) < 2 or min(sizes) < 1 or rows < 0:
        raise XpnetError(f"epoch_flops needs >= 2 positive sizes, got {sizes}")
    weights = sum(a * b for a, b in zip(sizes, sizes[1:], strict=False))
    forward = 2 * rows * weights
    backward = 4 * rows * weights - 2 * rows * sizes[0] * sizes[1]
    return {"forward": forward, "backward": backward, "total": forward + backward}


def weight_count(sizes: Sequence[int]) -> int:
    """Number of parameters (weights and biases) of an MLP with ``sizes``."""
    return sum(a * b + b for a, b in zip(sizes, sizes[1:], strict=False))


# --------------------------------------------------------------------------- data


def load_data(
    rows: int = ROWS, synthetic: bool = False, seed: int = SEED
) -> tuple[np.ndarray, np.ndarray, str]:
    """``(X float32 (rows, 784), y int64 (rows,), description)`` on the host.

    Real data: the bundled mnist-sample's 5,000 training and 10,000 test images
    (pixels / 255) tiled to ``rows``. Synthetic: Gaussian blobs around ten class
    centres, learnable, with no denormal trap.
    """
    if rows < 1:
        raise XpnetError(f"rows must be >= 1, got {rows}")
    if synthetic:
        rng = np.random.default_rng(seed)
        centres = rng.normal(0.0, 1.0, size=(CLASSES, 784))
        y = rng.integers(0, CLASSES, size=rows).astype(np.int64)
        X = rng.standard_normal(size=(rows, 784), dtype=np.float32)
        X += centres[y].astype(np.float32)
        return X, y, SYNTHETIC_TEXT.format(rows=rows)
    from ..datasets import load_dataset

    ds = load_dataset("mnist-sample")
    images = np.concatenate([ds.x_train, ds.x_test]).reshape(-1, 784)
    labels = np.concatenate([ds.y_train, ds.y_test]).astype(np.int64)
    base = (images / np.float32(255.0)).astype(np.float32)
    idx = np.arange(rows) % len(base)
    X = np.ascontiguousarray(base[idx])
    y = labels[idx]
    text = REAL_DATA_TEXT.format(rows=rows).replace("15k", f"{len(base) // 1000}k")
    return X, y, text


# --------------------------------------------------------------------------- peers


def _module_version(name: str) -> str | None:
    try:
        module = importlib.import_module(name)
    except Exception:
        return None
    return str(getattr(module, "__version__", "?"))


def _torch():
    try:
        import torch
    except Exception:
        return None
    return torch


def peer_skip_reason(peer: str, device: str) -> str | None:
    """Why ``peer`` cannot run on ``device`` (``"cpu"``/``"cuda:N"``), or None."""
    if peer == "sklearn":
        if device != "cpu":
            return f"skipped on {device} (CPU only)"
        if importlib.util.find_spec("sklearn") is None:
            return "skipped (scikit-learn not installed)"
        return None
    if peer == "pytorch":
        torch = _torch() if importlib.util.find_spec("torch") else None
        if torch is None:
            return "skipped (torch not installed)"
        if device != "cpu":
            if not torch.cuda.is_available():
                return f"skipped on {device} (this torch build sees no CUDA GPU)"
            index = int(device.split(":")[1]) if ":" in device else 0
            if index >= torch.cuda.device_count():
                return f"skipped on {device} (torch sees no such GPU)"
        return None
    raise XpnetError(f"unknown peer {peer!r}: choose from torch, sklearn or none")


def peer_messages(peers: Sequence[str], devices: Sequence[str]) -> list[str]:
    """One line per skipped peer and device, e.g. ``pytorch: skipped (...)``."""
    lines = []
    for peer in PEERS:
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


# --------------------------------------------------------------------------- runners


class Runner:
    """One system ready to train one model on one device.

    ``run_epoch()`` trains one epoch (synchronising the device) and returns the
    epoch's mean training loss as a float.
    """

    system = "?"

    def run_epoch(self) -> float:
        raise NotImplementedError

    def close(self) -> None:
        """Drop references to large buffers."""


class XpnetRunner(Runner):
    """xpnet's own ``Sequential.fit(X, y, epochs=1, batch_size=b)``.

    The data is validated once, when it is put on the device; each timed
    epoch then calls ``fit(..., check_inputs=False)``, as a training run that
    calls ``fit`` once for many epochs pays that scan once, not per epoch.
    """

    system = "xpnet"

    def __init__(self, sizes, X, y, batch_size, backend, lr=LR, seed=SEED):
        import xpnet

        self.backend = backend
        self.model = xpnet.mlp(
            list(sizes),
            activation="relu",
            device=backend,
            seed=seed,
            dtype=DTYPE,
            optimizer=xpnet.SGD(lr=lr, momentum=MOMENTUM),
        )
        self.X = self.model._prepare_x(X)
        self.y, _ = self.model._prepare_y(y, self.X.shape[0])
        self.batch_size = int(batch_size)
        self.loop_seconds: list[float] = []

    def initial_state(self) -> dict[str, np.ndarray]:
        return self.model.state_dict()

    def run_epoch(self) -> float:
        history = self.model.fit(
            self.X, self.y, epochs=1, batch_size=self.batch_size, check_inputs=False
        )
        self.backend.synchronize()
        self.loop_seconds.append(float(history["seconds"][-1]))
        return float(history["loss"][-1])

    def input_check_seconds(self, repeats: int = 3) -> float:
        """Median time of fit's input preparation (``_prepare_x`` + ``_prepare_y``)."""
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            X = self.model._prepare_x(self.X)
            self.model._prepare_y(self.y, X.shape[0])
            self.backend.synchronize()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    def optimizer_denormal_fraction(self) -> float:
        slots = [
            _backend.to_numpy(b) for s in self.model.optimizer.slots for b in s.values()
        ]
        return _denormal_fraction(slots)

    def close(self) -> None:
        self.X = self.y = self.model = None


class TorchRunner(Runner):
    """PyTorch eager: ``nn.Sequential`` + ``optim.SGD`` + ``F.cross_entropy``."""

    system = "pytorch"

    def __init__(self, sizes, X, y, batch_size, device, state, lr=LR, seed=SEED):
        import torch

        self.torch = torch
        self.device = torch.device(device)
        layers: list[Any] = []
        dense = []
        for i, (a, b) in enumerate(zip(sizes, sizes[1:], strict=False)):
            lin = torch.nn.Linear(a, b)
            dense.append(lin)
            layers.append(lin)
            if i < len(sizes) - 2:
                layers.append(torch.nn.ReLU())
        self.net = torch.nn.Sequential(*layers)
        with torch.no_grad():
            for i, lin in enumerate(dense):
                lin.weight.copy_(torch.from_numpy(state[f"{2 * i}.W"].T.copy()))
                lin.bias.copy_(torch.from_numpy(state[f"{2 * i}.b"]))
        self.net.to(device=self.device, dtype=torch.float32)
        self.opt = torch.optim.SGD(self.net.parameters(), lr=lr, momentum=MOMENTUM)
        self.X = torch.from_numpy(X).to(self.device)
        self.y = torch.from_numpy(y).to(self.device)
        self.n = int(X.shape[0])
        self.batch_size = int(batch_size)
        self.gen = torch.Generator(device=self.device).manual_seed(seed)

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)

    def run_epoch(self) -> float:
        torch, n, b = self.torch, self.n, self.batch_size
        F = torch.nn.functional
        perm = torch.randperm(n, device=self.device, generator=self.gen)
        total = torch.zeros((), device=self.device)
        for lo in range(0, n, b):
            idx = perm[lo : lo + b]
            xb, yb = self.X[idx], self.y[idx]
            self.opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(self.net(xb), yb)
            loss.backward()
            self.opt.step()
            total += loss.detach() * idx.shape[0]
        mean = float(total) / n  # one read-back per epoch, as in xpnet
        self.synchronize()
        return mean

    def optimizer_denormal_fraction(self) -> float:
        bufs = [
            s["momentum_buffer"].detach().cpu().numpy()
            for s in self.opt.state.values()
            if s.get("momentum_buffer") is not None
        ]
        return _denormal_fraction(bufs)

    def close(self) -> None:
        self.X = self.y = self.net = self.opt = None


class SklearnRunner(Runner):
    """scikit-learn ``MLPClassifier``: one ``partial_fit(X, y)`` per epoch.

    ``partial_fit`` runs ``_fit(incremental=True)``, whose stochastic solver makes
    one pass over ``gen_batches(n, batch_size)`` (last partial batch included),
    shuffling the indices first, and then leaves the epoch loop ("if
    incremental: break"); the optimizer (and its velocities) is created only on
    the first call. That first call, on a few rows, happens here, outside the
    timing; then the initial weights are copied in and the velocities zeroed.
    """

    system = "sklearn"

    def __init__(self, sizes, X, y, batch_size, state, lr=LR, seed=SEED):
        import warnings

        from sklearn.neural_network import MLPClassifier

        self.X, self.y = X, y
        self.clf = MLPClassifier(
            hidden_layer_sizes=tuple(sizes[1:-1]),
            activation="relu",
            solver="sgd",
            alpha=0.0,
            batch_size=int(batch_size),
            learning_rate="constant",
            learning_rate_init=lr,
            momentum=MOMENTUM,
            nesterovs_momentum=False,
            shuffle=True,
            # A RandomState instance (not an int) so that each partial_fit call
            # draws a fresh permutation instead of re-seeding the same one.
            random_state=np.random.RandomState(seed),
        )
        first = min(len(X), int(batch_size))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.clf.partial_fit(X[:first], y[:first], classes=np.arange(CLASSES))
        n_dense = len(sizes) - 1
        for i in range(n_dense):
            self.clf.coefs_[i][...] = state[f"{2 * i}.W"]
            self.clf.intercepts_[i][...] = state[f"{2 * i}.b"]
        opt = self.clf._optimizer
        opt.velocities = [np.zeros_like(v) for v in opt.velocities]
        if self.clf.coefs_[0].dtype != np.float32:
            raise XpnetError("scikit-learn did not keep float32 weights")

    def run_epoch(self) -> float:
        self.clf.partial_fit(self.X, self.y)
        return float(self.clf.loss_)

    def optimizer_denormal_fraction(self) -> float:
        return _denormal_fraction(self.clf._optimizer.velocities)

    def close(self) -> None:
        self.clf = self.X = self.y = None


def _denormal_fraction(arrays: Sequence[Any]) -> float:
    total = sum(int(np.size(a)) for a in arrays)
    if not total:
        return 0.0
    count = 0
    for a in arrays:
        a = np.abs(np.asarray(a))
        tiny = np.finfo(a.dtype).tiny
        count += int(np.count_nonzero((a > 0) & (a < tiny)))
    return count / total


def make_runners(
    sizes: Sequence[int],
    X: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    backend: _backend.Backend,
    peers: Sequence[str] = PEERS,
    lr: float = LR,
    seed: int = SEED,
) -> tuple[dict[str, Runner], dict[str, str]]:
    """Runners for xpnet and each available peer, all from xpnet's initial weights.

    Returns ``(runners, skipped)`` where ``skipped`` maps a peer to its reason.
    """
    device = backend.device_name
    runners: dict[str, Runner] = {}
    skipped: dict[str, str] = {}
    xr = XpnetRunner(sizes, X, y, batch_size, backend, lr=lr, seed=seed)
    runners["xpnet"] = xr
    state = xr.initial_state()
    for peer in PEERS:
        if peer not in peers:
            skipped[peer] = "skipped (not requested with --peers)"
            continue
        reason = peer_skip_reason(peer, device)
        if reason:
            skipped[peer] = reason
            continue
        if peer == "pytorch":
            runners[peer] = TorchRunner(
                sizes, X, y, batch_size, device, state, lr=lr, seed=seed
            )
        else:
            runners[peer] = SklearnRunner(
                sizes, X, y, batch_size, state, lr=lr, seed=seed
            )
    return runners, skipped


class EpochTiming(NamedTuple):
    """One timed epoch: wall seconds, mean loss, and the CPU cores that other
    processes used meanwhile (``None`` where ``/proc`` is unavailable)."""

    seconds: float
    loss: float
    foreign_cores: float | None


_HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


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
    return max(foreign, 0) / _HZ / seconds


def contended(foreign: float | None, seconds: float) -> bool:
    """Whether other processes used > :data:`CONTENTION_CORES` cores during an
    epoch, by more than the ticks' granularity can explain."""
    if foreign is None:
        return False
    return foreign > CONTENTION_CORES and foreign * seconds * _HZ > 5


def timed_epoch(runner: Runner) -> EpochTiming:
    """Time one epoch; runners synchronise their device before returning."""
    before = cpu_ticks()
    start = time.perf_counter()
    loss = runner.run_epoch()
    seconds = time.perf_counter() - start
    return EpochTiming(seconds, loss, foreign_cores(before, cpu_ticks(), seconds))


def wait_for_quiet(max_wait: float = 60.0, window: float = 0.5) -> float:
    """Wait until the machine is idle apart from us (busy < 0.2 cores over a
    ``window``), at most ``max_wait`` seconds; returns the seconds waited."""
    start = time.perf_counter()
    while True:
        a = cpu_ticks()
        if a is None:
            return 0.0
        time.sleep(window)
        b = cpu_ticks()
        if (b[0] - a[0]) / _HZ / window < 0.2:
            return time.perf_counter() - start
        if time.perf_counter() - start > max_wait:
            return time.perf_counter() - start


def runner_extras(runner: Runner) -> dict[str, Any]:
    """Diagnostics after a row: denormal share of optimizer state; for xpnet the
    loop-only seconds of fit and the cost of fit's input checks."""
    entry: dict[str, Any] = {}
    try:
        entry["optimizer_denormal_fraction"] = runner.optimizer_denormal_fraction()
    except Exception:
        pass
    if isinstance(runner, XpnetRunner):
        entry["fit_loop_s"] = statistics.median(runner.loop_seconds[-3:])
        entry["input_checks_s"] = runner.input_check_seconds()
    return entry


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
    systems: dict[str, Any],
    repeats: int = 3,
    warmup: int = 1,
    max_retries: int = 6,
    settle_s: float = 0.0,
    on_contention: Callable[[str, EpochTiming], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Warm up, then time ``repeats`` epochs of every system, interleaved.

    ``systems`` maps a name to a :class:`Runner`, or to anything with an
    ``epoch() -> EpochTiming`` method (:class:`InProcess`, :class:`Worker`).
    Epochs during which other processes used the CPU (see :func:`contended`)
    are discarded and re-run, at most ``max_retries`` times per row in all;
    after that they are kept and the system is marked ``contended``.
    ``settle_s`` sleeps between epochs so that idle thread pools stop spinning.

    Returns per system ``{"times", "median_s", "losses", "warmup_s",
    "foreign_cores", "discarded", "contended"}``.
    """
    if repeats < 1:
        raise XpnetError(f"repeats must be >= 1, got {repeats}")
    systems = {
        k: InProcess(v) if isinstance(v, Runner) else v for k, v in systems.items()
    }
    out: dict[str, dict[str, Any]] = {
        name: {
            "times": [],
            "losses": [],
            "warmup_s": [],
            "foreign_cores": [],
            "discarded": [],
            "contended": False,
        }
        for name in systems
    }
    retries = 0
    for _ in range(warmup):
        for name, system in systems.items():
            if settle_s:
                time.sleep(settle_s)
            out[name]["warmup_s"].append(system.epoch().seconds)
    for _ in range(repeats):
        for name, system in systems.items():
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
                    wait_for_quiet()
                    continue
                if contended(t.foreign_cores, t.seconds):
                    out[name]["contended"] = True
                break
            out[name]["times"].append(t.seconds)
            out[name]["losses"].append(t.loss)
            out[name]["foreign_cores"].append(t.foreign_cores)
    for name in systems:
        out[name]["median_s"] = statistics.median(out[name]["times"])
    return out


# --------------------------------------------------------------------------- workers


def _worker_main(conn: Any, system: str, device: str) -> None:
    """Loop of a worker process: one system, commands from the parent's pipe."""
    data: dict[tuple[int, bool], tuple[np.ndarray, np.ndarray]] = {}
    runner: Runner | None = None
    backend = _backend.resolve(device)
    while True:
        cmd, kw = conn.recv()
        try:
            if cmd == "exit":
                conn.send((True, None))
                return
            if cmd == "setup":
                key = (kw["rows"], kw["synthetic"])
                if key not in data:
                    data.clear()
                    data[key] = load_data(kw["rows"], kw["synthetic"])[:2]
                X, y = data[key]
                runner = _make_runner(
                    system,
                    kw["sizes"],
                    X,
                    y,
                    kw["batch_size"],
                    backend,
                    kw["state"],
                    kw["lr"],
                )
                value = runner.initial_state() if system == "xpnet" else None
            elif cmd == "epoch":
                value = tuple(timed_epoch(runner))
            elif cmd == "extras":
                value = runner_extras(runner)
            elif cmd == "close":
                if runner is not None:
                    runner.close()
                runner, value = None, None
            elif cmd == "gemm":
                value = measure_gemm(system, backend, kw["n"])
            else:
                raise XpnetError(f"unknown worker command {cmd!r}")
            conn.send((True, value))
        except Exception as exc:  # reported to the parent, which raises
            conn.send((False, f"{system} on {device}: {type(exc).__name__}: {exc}"))


def _make_runner(system, sizes, X, y, batch_size, backend, state, lr) -> Runner:
    if system == "xpnet":
        return XpnetRunner(sizes, X, y, batch_size, backend, lr=lr)
    if system == "pytorch":
        return TorchRunner(sizes, X, y, batch_size, backend.device_name, state, lr=lr)
    if system == "sklearn":
        return SklearnRunner(sizes, X, y, batch_size, state, lr=lr)
    raise XpnetError(f"unknown system {system!r}")


class Worker:
    """One system in its own process, so that the thread pools of different
    libraries (OpenBLAS, OpenMP/MKL) never share the process or spin against
    each other. Same interface as :class:`InProcess` plus :meth:`setup`."""

    def __init__(self, system: str, device: str):
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self.system = system
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(
            target=_worker_main, args=(child, system, device), daemon=True
        )
        self.proc.start()
        child.close()

    def call(self, cmd: str, **kw: Any) -> Any:
        self.conn.send((cmd, kw))
        ok, value = self.conn.recv()
        if not ok:
            raise XpnetError(value)
        return value

    def setup(self, **kw: Any) -> Any:
        return self.call("setup", **kw)

    def gemm(self, n: int) -> dict[str, Any]:
        return self.call("gemm", n=n)

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


# --------------------------------------------------------------------------- GEMM


def measure_gemm(
    library: str, backend: _backend.Backend, n: int, repeats: int = 5
) -> dict[str, Any]:
    """Float32 ``n x n x n`` matmul rate of ``library`` on the device.

    ``gflops`` is from the fastest of ``repeats`` products: the rate is a
    ceiling, and on a shared machine other work only ever lowers a sample
    (a median taken while a neighbour ran once put it 40% low, and rows
    above 100% of it). ``gflops_median`` is kept too.
    ``library``: ``"xpnet"`` (the backend's namespace: NumPy or CuPy) or
    ``"pytorch"``. Inputs are standard-normal (no zeros, no denormals).
    """
    rng = np.random.default_rng(1)
    a_host = rng.standard_normal((n, n), dtype=np.float32)
    b_host = rng.standard_normal((n, n), dtype=np.float32)
    if library == "xpnet":
        a, b = backend.asarray(a_host), backend.asarray(b_host)
        sync = backend.synchronize
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
    for i in range(repeats + 1):
        sync()
        start = time.perf_counter()
        c = a @ b
        sync()
        if i:  # the first product is the warm-up
            times.append(time.perf_counter() - start)
        del c
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
    }


# ------------------------------------------------------------------------ environment


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _blas_info() -> dict[str, Any]:
    info: dict[str, Any] = {}
    try:
        config = np.show_config(mode="dicts")
        blas = config.get("Build Dependencies", {}).get("blas", {})
        info["numpy_blas"] = (
            f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
        )
    except Exception:
        pass
    try:
        from threadpoolctl import threadpool_info

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


def _gpu_info(devices: Sequence[str]) -> list[dict[str, Any]]:
    gpus = []
    for device in devices:
        if device == "cpu":
            continue
        entry: dict[str, Any] = {"device": device}
        try:
            backend = _backend.resolve(device)
            entry["name"] = _backend.gpu_name(backend)
            import cupy

            rt = cupy.cuda.runtime
            entry["cuda_driver_api"] = _cuda_version(rt.driverGetVersion())
            entry["cuda_runtime"] = _cuda_version(rt.runtimeGetVersion())
        except Exception as exc:
            entry["error"] = f"{type(exc).__name__}: {exc}"
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
        gpus.append(entry)
    return gpus


def _cuda_version(code: int) -> str:
    return f"{code // 1000}.{(code % 1000) // 10}"


def environment(devices: Sequence[str] = ("cpu",)) -> dict[str, Any]:
    """Machine and software facts for the results file."""
    torch = _torch() if importlib.util.find_spec("torch") else None
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    env: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": affinity,
        "torch_threads": torch.get_num_threads() if torch is not None else None,
        "thread_env": {
            k: os.environ[k]
            for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
            if k in os.environ
        },
        "versions": {
            "python": platform.python_version(),
            "xpnet": __version__,
            "numpy": np.__version__,
            "array_api_compat": _module_version("array_api_compat"),
            "cupy": _module_version("cupy")
            if importlib.util.find_spec("cupy")
            else None,
            "torch": torch.__version__ if torch is not None else None,
            "sklearn": _module_version("sklearn")
            if importlib.util.find_spec("sklearn")
            else None,
            "matplotlib": _module_version("matplotlib")
            if importlib.util.find_spec("matplotlib")
            else None,
        },
        "gpus": _gpu_info(devices),
    }
    env.update(_blas_info())
    return env


# --------------------------------------------------------------------------- plan


@dataclass
class Plan:
    """What to run: devices, models and their batch sizes, rows, repeats."""

    devices: list[str]
    models: list[str]
    batch_sizes: dict[str, list[int]]
    rows: dict[str, int]
    repeats: int = 3
    warmup: int = 1
    peers: list[str] = field(default_factory=lambda: list(PEERS))
    synthetic: bool = False
    quick: bool = False
    gemm_size: dict[str, int] = field(default_factory=dict)
    lr: float = LR
    note: str = ""
    device_notes: list[str] = field(default_factory=list)
    isolate: bool = True
    append: bool = False
    max_retries: int = 6
    settle_s: float = 0.2


def _parse_int_list(text: str, what: str, keep_order: bool = False) -> list[int]:
    values = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        if not part.isdigit() or int(part) < 1:
            raise XpnetError(
                f"{what} must be positive integers separated by commas, got {text!r}"
            )
        values.append(int(part))
    if not values:
        raise XpnetError(f"{what} is empty: give e.g. 32,128,1024")
    return list(dict.fromkeys(values)) if keep_order else sorted(set(values))


def parse_models(text: str) -> list[str]:
    names = [m.strip().lower() for m in str(text).split(",") if m.strip()]
    if not names:
        raise XpnetError("--models is empty: choose from " + ", ".join(MODELS))
    for name in names:
        if name not in MODELS:
            raise XpnetError(f"unknown model {name!r}: choose from {', '.join(MODELS)}")
    return list(dict.fromkeys(names))


def parse_peers(text: str) -> list[str]:
    text = str(text).strip().lower()
    if text in ("none", ""):
        return []
    peers = []
    for part in text.split(","):
        part = part.strip()
        if part not in _PEER_ALIASES:
            raise XpnetError(
                f"unknown peer {part!r} in --peers: use torch, sklearn, "
                "torch,sklearn or none"
            )
        peers.append(_PEER_ALIASES[part])
    return list(dict.fromkeys(peers))


def parse_devices(text: str, notes: list[str] | None = None) -> list[str]:
    """``auto | cpu | cuda | cuda:N | all`` (comma lists allowed) -> device names.

    ``all`` is the CPU plus every GPU that CuPy can use; when there is none, the
    reason is appended to ``notes``. Unusable explicit devices raise
    :class:`~xpnet.errors.DeviceError`.
    """
    devices: list[str] = []
    for part in str(text).split(","):
        part = part.strip().lower()
        if part == "all":
            devices.append("cpu")
            _cupy, count, reason = _backend._cupy_gpu_count()
            devices += [f"cuda:{i}" for i in range(count)]
            if not count and notes is not None:
                notes.append(f"cuda: not benchmarked ({reason})")
        elif part == "auto":
            devices.append(_backend.resolve("auto").device_name)
        elif part:
            devices.append(_backend.resolve(part).device_name)
    if not devices:
        raise XpnetError("--device is empty: use auto, cpu, cuda, cuda:N or all")
    return list(dict.fromkeys(devices))


def plan_from_args(args: argparse.Namespace) -> Plan:
    """Validate the parsed options into a :class:`Plan` (XpnetError when bad)."""
    models = parse_models(args.models)
    repeats = args.repeats
    if repeats < 3:
        raise XpnetError(
            f"--repeats must be at least 3 (median of >= 3), got {repeats}"
        )
    if args.quick:
        default_sizes = list(QUICK["batch_sizes"])
        base_rows = QUICK["rows"]
    else:
        default_sizes = list(BATCH_SIZES)
        base_rows = ROWS
    if args.rows is not None:
        if args.rows < 1:
            raise XpnetError(f"--rows must be >= 1, got {args.rows}")
        base_rows = args.rows
    sizes = (
        _parse_int_list(args.batch_sizes, "--batch-sizes")
        if args.batch_sizes
        else default_sizes
    )
    batch_sizes = {m: list(sizes) for m in models}
    rows = {m: base_rows for m in models}
    if args.quick and "wide" in models:
        if not args.batch_sizes:
            batch_sizes["wide"] = list(QUICK["wide_batch_sizes"])
        if args.rows is None:
            rows["wide"] = QUICK["wide_rows"]
    for item in args.batch_sizes_for or []:
        name, sep, values = str(item).partition("=")
        name = name.strip().lower()
        if not sep or name not in MODELS:
            raise XpnetError(
                f"--batch-sizes-for takes MODEL=SIZES (e.g. wide=1024), got {item!r}"
            )
        if name in models:
            batch_sizes[name] = _parse_int_list(
                values, f"--batch-sizes-for {name}", keep_order=True
            )
    if args.max_retries < 0:
        raise XpnetError(f"--max-retries must be >= 0, got {args.max_retries}")
    if args.warmup < 0:
        raise XpnetError(f"--warmup must be >= 0, got {args.warmup}")
    if args.gemm_size is not None and args.gemm_size < 16:
        raise XpnetError(f"--gemm-size must be >= 16, got {args.gemm_size}")
    device_notes: list[str] = []
    devices = parse_devices(args.device, device_notes)
    gemm_size = {d: args.gemm_size or (2048 if d == "cpu" else 8192) for d in devices}
    return Plan(
        devices=devices,
        models=models,
        batch_sizes=batch_sizes,
        rows=rows,
        repeats=repeats,
        warmup=args.warmup,
        peers=parse_peers(args.peers),
        synthetic=bool(args.synthetic),
        quick=bool(args.quick),
        gemm_size=gemm_size,
        lr=LR,
        note=args.note or "",
        device_notes=device_notes,
        isolate=not args.in_process,
        append=bool(args.append),
        max_retries=args.max_retries,
    )


# --------------------------------------------------------------------------- results


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not b:
        return None
    return a / b


def make_row(
    model: str,
    sizes: Sequence[int],
    device: str,
    batch_size: int,
    rows: int,
    timings: dict[str, dict[str, Any]],
    gemm: dict[str, dict[str, Any]],
    extra: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One results row: every system's times and the derived figures."""
    flops = epoch_flops(sizes, rows)
    systems: dict[str, Any] = {}
    for name, t in timings.items():
        median = t["median_s"]
        gflops = flops["total"] / median / 1e9
        rate = gemm.get("pytorch" if name == "pytorch" else "xpnet", {}).get("gflops")
        entry = {
            "median_s": median,
            "times": t["times"],
            "warmup_s": t.get("warmup_s", []),
            "min_s": min(t["times"]),
            "max_s": max(t["times"]),
            "samples_per_s": rows / median,
            "gflops": gflops,
            "pct_gemm": 100.0 * gflops / rate if rate else None,
            "final_loss": t["losses"][-1] if t.get("losses") else None,
            "foreign_cores": t.get("foreign_cores", []),
            "discarded": t.get("discarded", []),
            "contended": bool(t.get("contended", False)),
        }
        entry.update((extra or {}).get(name, {}))
        systems[name] = entry
    x = systems.get("xpnet", {}).get("median_s")
    return {
        "model": model,
        "sizes": list(sizes),
        "device": device,
        "batch_size": batch_size,
        "rows": rows,
        "steps_per_epoch": math.ceil(rows / batch_size),
        "flops_per_epoch": flops["total"],
        "systems": systems,
        "ratio_xpnet_torch": _ratio(x, systems.get("pytorch", {}).get("median_s")),
        "ratio_xpnet_sklearn": _ratio(x, systems.get("sklearn", {}).get("median_s")),
        "contended": any(v["contended"] for v in systems.values()),
    }


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


TABLE_COLUMNS = (
    "batch",
    "xpnet s",
    "samples/s",
    "GFLOP/s",
    "% GEMM",
    "torch s",
    "xpnet/torch",
    "sklearn s",
    "xpnet/sklearn",
)


def table_cells(row: dict[str, Any]) -> list[str]:
    s = row["systems"]
    x = s.get("xpnet", {})
    return [
        str(row["batch_size"]) + ("*" if row.get("contended") else ""),
        _fmt(x.get("median_s"), ".3f"),
        _fmt(x.get("samples_per_s"), ",.0f"),
        _fmt(x.get("gflops"), ".1f"),
        _fmt(x.get("pct_gemm"), ".0f"),
        _fmt(s.get("pytorch", {}).get("median_s"), ".3f"),
        _fmt(row.get("ratio_xpnet_torch"), ".2f"),
        _fmt(s.get("sklearn", {}).get("median_s"), ".3f"),
        _fmt(row.get("ratio_xpnet_sklearn"), ".2f"),
    ]


def format_table(rows: Sequence[dict[str, Any]], markdown: bool = False) -> str:
    """A text (or markdown) table of ``rows`` with :data:`TABLE_COLUMNS`."""
    cells = [table_cells(r) for r in rows]
    if markdown:
        lines = [
            "| " + " | ".join(TABLE_COLUMNS) + " |",
            "|" + "|".join("---:" for _ in TABLE_COLUMNS) + "|",
        ]
        lines += ["| " + " | ".join(c) + " |" for c in cells]
        return "\n".join(lines)
    widths = [
        max(len(h), *(len(c[i]) for c in cells)) if cells else len(h)
        for i, h in enumerate(TABLE_COLUMNS)
    ]
    lines = ["  ".join(h.rjust(w) for h, w in zip(TABLE_COLUMNS, widths, strict=True))]
    lines += [
        "  ".join(v.rjust(w) for v, w in zip(c, widths, strict=True)) for c in cells
    ]
    return "\n".join(lines)


def _title(model: str, device: str, rows: int) -> str:
    sizes = "-".join(str(s) for s in MODELS.get(model, ()))
    return f"{model} ({sizes}) on {device}, {rows:,} rows per epoch"


def _groups(result: dict[str, Any]) -> list[tuple[tuple[str, str, int], list[dict]]]:
    groups: dict[tuple[str, str, int], list[dict]] = {}
    for row in result["rows"]:
        groups.setdefault((row["model"], row["device"], row["rows"]), []).append(row)
    return [(k, sorted(v, key=lambda r: r["batch_size"])) for k, v in groups.items()]


def header_lines(result: dict[str, Any]) -> list[str]:
    cfg = result["config"]
    lines = [
        f"xpnet bench {result['environment']['date']}, "
        f"devices {', '.join(cfg['devices'])}",
        f"data: {cfg['data']}",
        f"training: SGD lr {cfg['lr']} momentum {cfg['momentum']} (no Nesterov, no "
        f"weight decay), {cfg['dtype']}, softmax cross-entropy, shuffle every epoch",
        cfg.get("timing") or TIMING_TEXT.format(repeats=cfg["repeats"]),
        cfg.get("isolation") or IN_PROCESS_TEXT,
        cfg.get("contention") or "contention: not checked",
        FLOPS_TEXT,
        DENORMAL_TEXT,
    ]
    if cfg.get("quick"):
        lines.append(QUICK_TEXT)
    for device, libs in result["gemm"].items():
        for lib, g in libs.items():
            lines.append(
                f"GEMM {device} {g['what']} {g['n']}^3 float32: "
                f"{g['gflops']:.1f} GFLOP/s (best of {len(g['times'])}) [{lib}]"
            )
    earlier = result.get("earlier_runs", [])
    prefix = "last run: " if earlier else ""
    lines += [prefix + m for m in result.get("peer_messages", [])]
    if earlier:
        lines.append(f"last run: {_command_text(result.get('command'))}")
    for i, run in enumerate(earlier, 1):
        lines.append(
            f"earlier run {i} (rows merged into this file): "
            f"{_command_text(run.get('command'))}; skipped: "
            + ("; ".join(run.get("peer_messages") or []) or "nothing")
            + "; GEMM "
            + ", ".join(
                f"{dev} [{lib}] {g['gflops']:.1f}"
                for dev, libs in (run.get("gemm") or {}).items()
                for lib, g in libs.items()
            )
            + " GFLOP/s"
        )
    if cfg.get("note"):
        # Appended runs carry their predecessors' notes: show each once.
        for note in dict.fromkeys(cfg["note"].split(" | ")):
            lines.append(f"note: {note}")
    lines.append(
        "ratios: xpnet time / peer time (below 1 = xpnet faster); "
        "% GEMM = xpnet GFLOP/s / the device's measured GEMM rate"
    )
    return lines


def _command_text(argv: Sequence[str] | None) -> str:
    """The options of a recorded command line, without the ``--note`` text."""
    if not argv:
        return "?"
    out, skip = [], False
    for arg in list(argv)[1:]:
        if skip:
            skip = False
            continue
        if arg == "--note":
            skip = True
            continue
        if not arg.startswith("--note="):
            out.append(arg)
    return "xpnet bench " + " ".join(out)


def format_report(result: dict[str, Any], markdown: bool = False) -> str:
    """The whole report: header lines, then one table per model and device."""
    out = []
    if markdown:
        env = result["environment"]
        v = env["versions"]
        out.append(
            f"# xpnet throughput benchmark: {', '.join(result['config']['devices'])}, "
            f"{env['date'][:10]}\n"
        )
        out += [f"- {line}" for line in header_lines(result)]
        gpus = "; ".join(
            g.get("nvidia_smi") or g.get("name") or "?" for g in env.get("gpus", [])
        )
        out.append(
            f"- machine: {env['cpu_model']}, {env['cpu_affinity']} CPU threads"
            + (f", GPUs: {gpus}" if gpus else "")
            + f"; numpy BLAS: {env.get('numpy_blas', '?')}; "
            f"torch threads {env.get('torch_threads')}"
        )
        out.append(
            "- versions: "
            + ", ".join(f"{k} {val}" for k, val in v.items() if val is not None)
        )
        out.append("")
    else:
        out += header_lines(result)
        out.append("")
    for (model, device, rows), group in _groups(result):
        title = _title(model, device, rows)
        out.append(f"## {title}\n" if markdown else title)
        out.append(format_table(group, markdown=markdown))
        out.append("")
    for line in result.get("remarks", []):
        out.append(f"- {line}" if markdown else line)
    return "\n".join(out).rstrip() + "\n"


def output_stem(devices: Sequence[str], date: str) -> str:
    """``cpu-2026-11-22``, ``cuda0-...`` or ``cpu+cuda0-...``."""
    tag = "+".join(d.replace(":", "") for d in devices)
    return f"{tag}-{date}"


def write_outputs(
    result: dict[str, Any], out_dir: Path, stem: str, plot: bool = True
) -> dict[str, str]:
    """Write ``stem.json`` and ``stem.md`` (and ``stem.png``); return the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": str(out_dir / f"{stem}.json"), "md": str(out_dir / f"{stem}.md")}
    _atomic_write(Path(paths["json"]), json.dumps(result, indent=1) + "\n")
    _atomic_write(Path(paths["md"]), format_report(result, markdown=True))
    if plot:
        png = out_dir / f"{stem}.png"
        message = plot_results(result, png)
        if message is None:
            paths["png"] = str(png)
        else:
            paths["plot"] = message
    return paths


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def plot_results(result: dict[str, Any], path: Path) -> str | None:
    """Log-log epoch time vs batch size, a subplot per model; None when written,
    else the reason it was skipped."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception:
        return "plot: skipped (matplotlib not installed)"
    groups = _groups(result)
    if not groups:
        return "plot: skipped (no rows yet)"
    models = list(dict.fromkeys(k[0] for k, _ in groups))
    fig, axes = plt.subplots(
        1, len(models), figsize=(5 * len(models), 4), squeeze=False
    )
    for ax, model in zip(axes[0], models, strict=True):
        for (m, device, rows), group in groups:
            if m != model:
                continue
            systems = list(dict.fromkeys(s for r in group for s in r["systems"]))
            for system in systems:
                pts = [
                    (r["batch_size"], r["systems"][system]["median_s"])
                    for r in group
                    if system in r["systems"]
                ]
                xs, ys = zip(*pts, strict=True)
                label = f"{system} {device}" + (
                    f" ({rows:,} rows)" if rows != ROWS else ""
                )
                ax.plot(xs, ys, marker="o", label=label)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(f"{model} {'-'.join(map(str, MODELS.get(model, ())))}")
        ax.set_xlabel("batch size")
        ax.set_ylabel("seconds per epoch")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{result['config']['data']}; SGD momentum 0.9, float32", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


# --------------------------------------------------------------------------- run


def run_plan(
    plan: Plan,
    out_dir: Path | None = None,
    plot: bool = True,
    log: Callable[[str], None] | None = None,
    argv: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Run every row of ``plan``; write results after each row when ``out_dir``.

    With ``plan.isolate`` (the default) each system runs in its own worker
    process; otherwise all run in this process.
    """
    log = log or (lambda _msg: None)
    max_rows = max(plan.rows.values())
    data_text = (SYNTHETIC_TEXT if plan.synthetic else REAL_DATA_TEXT).format(
        rows=max_rows
    )
    if len(set(plan.rows.values())) > 1:
        data_text += " (fewer rows for some models: see the tables)"
    env = environment(plan.devices)
    date = env["date"][:10]
    stem = output_stem(plan.devices, date)
    result: dict[str, Any] = {
        "schema": SCHEMA,
        "command": list(argv) if argv is not None else None,
        "config": {
            "devices": plan.devices,
            "models": {m: list(MODELS[m]) for m in plan.models},
            "batch_sizes": plan.batch_sizes,
            "rows": plan.rows,
            "repeats": plan.repeats,
            "warmup_epochs": plan.warmup,
            "peers": plan.peers,
            "lr": plan.lr,
            "momentum": MOMENTUM,
            "nesterov": False,
            "weight_decay": 0.0,
            "dtype": DTYPE,
            "data": data_text,
            "synthetic": plan.synthetic,
            "quick": plan.quick,
            "isolated_processes": plan.isolate,
            "contention_cores": CONTENTION_CORES,
            "max_retries_per_row": plan.max_retries,
            "note": plan.note,
            "timing": TIMING_TEXT.format(repeats=plan.repeats),
            "isolation": ISOLATION_TEXT if plan.isolate else IN_PROCESS_TEXT,
            "contention": CONTENTION_TEXT.format(
                cores=CONTENTION_CORES, retries=plan.max_retries
            ),
            "flops": FLOPS_TEXT,
            "denormals": DENORMAL_TEXT,
        },
        "environment": env,
        "gemm": {},
        "peer_messages": plan.device_notes + peer_messages(plan.peers, plan.devices),
        "rows": [],
        "remarks": [],
        "complete": False,
    }
    if plan.append and out_dir is not None and (out_dir / f"{stem}.json").is_file():
        _merge_previous(result, json.loads((out_dir / f"{stem}.json").read_text()))
        log(f"appending to {out_dir / f'{stem}.json'}")
    for line in result["peer_messages"]:
        log(line)
    paths: dict[str, str] = {}

    def save(final: bool = False) -> None:
        nonlocal paths
        result["remarks"] = remarks(result)
        if out_dir is not None:
            paths = write_outputs(result, out_dir, stem, plot=plot and final)

    def on_contention(name: str, t: EpochTiming) -> None:
        log(
            f"  {name}: epoch of {t.seconds:.3f}s discarded (other processes used "
            f"{t.foreign_cores:.2f} CPU cores); waiting for quiet and re-running"
        )

    for device in plan.devices:
        systems = ["xpnet"] + [
            p for p in PEERS if p in plan.peers and not peer_skip_reason(p, device)
        ]
        workers = _start_systems(systems, device, plan)
        try:
            gemm = {}
            for lib in ("xpnet", "pytorch"):
                if lib in workers:
                    wait_for_quiet(max_wait=30.0)
                    gemm[lib] = workers[lib].gemm(plan.gemm_size[device])
                    g = gemm[lib]
                    log(f"GEMM {device} [{lib}] {g['n']}^3: {g['gflops']:.1f} GFLOP/s")
            result["gemm"][device] = gemm
            for model in plan.models:
                sizes, rows = MODELS[model], plan.rows[model]
                for batch in plan.batch_sizes[model]:
                    start = time.perf_counter()
                    waited = wait_for_quiet(max_wait=30.0)
                    kw = {
                        "sizes": list(sizes),
                        "rows": rows,
                        "synthetic": plan.synthetic,
                        "batch_size": batch,
                        "lr": plan.lr,
                    }
                    try:
                        state = workers["xpnet"].setup(state=None, **kw)
                        for name in systems[1:]:
                            workers[name].setup(state=state, **kw)
                        del state
                        timings = time_runners(
                            workers,
                            plan.repeats,
                            plan.warmup,
                            max_retries=plan.max_retries,
                            settle_s=plan.settle_s,
                            on_contention=on_contention,
                        )
                        extra = {k: w.extras() for k, w in workers.items()}
                    finally:
                        for w in workers.values():
                            w.close()
                    row = make_row(
                        model, sizes, device, batch, rows, timings, gemm, extra
                    )
                    row["waited_for_quiet_s"] = round(waited, 2)
                    add_row(result, row)
                    save()
                    log(
                        f"{model} {device} b={batch}: "
                        + ", ".join(
                            f"{k} {v['median_s']:.3f}s"
                            for k, v in row["systems"].items()
                        )
                        + f"  (row took {time.perf_counter() - start:.0f}s)"
                    )
                if plot and out_dir is not None:
                    save(final=True)
        finally:
            for w in workers.values():
                w.shutdown()
    result["complete"] = True
    save(final=plot)
    result["paths"] = paths
    return result


def _row_key(row: dict[str, Any]) -> tuple:
    return (row["model"], row["device"], row["batch_size"], row["rows"])


def add_row(result: dict[str, Any], row: dict[str, Any]) -> None:
    """Add ``row``, replacing an earlier row of the same model, device, batch
    size and rows."""
    result["rows"] = [r for r in result["rows"] if _row_key(r) != _row_key(row)]
    result["rows"].append(row)


def _merge_previous(result: dict[str, Any], prev: dict[str, Any]) -> None:
    """Carry the rows and the record of earlier runs of ``prev`` into ``result``."""
    if prev.get("schema") != SCHEMA:
        raise XpnetError(
            f"cannot append to results of schema {prev.get('schema')!r}: "
            f"expected {SCHEMA}; use another --out folder"
        )
    earlier = prev.get("earlier_runs", [])
    earlier.append(
        {
            "command": prev.get("command"),
            "config": prev.get("config"),
            "gemm": prev.get("gemm"),
            "peer_messages": prev.get("peer_messages"),
            "complete": prev.get("complete"),
        }
    )
    result["earlier_runs"] = earlier
    result["rows"] = list(prev.get("rows", []))
    notes = [r["config"].get("note") for r in earlier if r.get("config")]
    notes.append(result["config"]["note"])
    parts = [p for n in notes if n for p in n.split(" | ")]
    result["config"]["note"] = " | ".join(dict.fromkeys(parts))


class _LocalSystem:
    """In-process stand-in for :class:`Worker` (``--in-process``)."""

    def __init__(self, system: str, device: str):
        self.system = system
        self.backend = _backend.resolve(device)
        self.runner: Runner | None = None
        self._data: dict[tuple[int, bool], tuple[np.ndarray, np.ndarray]] = {}

    def gemm(self, n: int) -> dict[str, Any]:
        return measure_gemm(self.system, self.backend, n)

    def setup(self, *, sizes, rows, synthetic, batch_size, lr, state) -> Any:
        key = (rows, synthetic)
        if key not in self._data:
            self._data = {key: load_data(rows, synthetic)[:2]}
        X, y = self._data[key]
        self.runner = _make_runner(
            self.system, sizes, X, y, batch_size, self.backend, state, lr
        )
        return self.runner.initial_state() if self.system == "xpnet" else None

    def epoch(self) -> EpochTiming:
        return timed_epoch(self.runner)

    def extras(self) -> dict[str, Any]:
        return runner_extras(self.runner)

    def close(self) -> None:
        if self.runner is not None:
            self.runner.close()
        self.runner = None

    def shutdown(self) -> None:
        self.close()


def _start_systems(systems: Sequence[str], device: str, plan: Plan) -> dict[str, Any]:
    if not plan.isolate:
        return {name: _LocalSystem(name, device) for name in systems}
    workers: dict[str, Any] = {}
    try:
        for name in systems:
            workers[name] = Worker(name, device)
    except BaseException:
        for w in workers.values():
            w.shutdown()
        raise
    return workers


def remarks(result: dict[str, Any]) -> list[str]:
    """Notes derived from the rows: large input-check shares, denormals."""
    out = []
    worst = None
    for row in result["rows"]:
        x = row["systems"].get("xpnet", {})
        checks, median = x.get("input_checks_s"), x.get("median_s")
        if checks is not None and median:
            share = checks / median
            if worst is None or share > worst[0]:
                worst = (share, row, checks)
    if worst is not None:
        share, row, checks = worst
        out.append(
            f"xpnet fit's input checks (_prepare_x isfinite scan + _prepare_y "
            f"label range) cost {checks * 1e3:.1f} ms per fit call; largest share "
            f"{100 * share:.1f}% of an epoch ({row['model']} b={row['batch_size']} "
            f"on {row['device']}); paid once per fit() call, not in the epoch "
            "times"
        )
    worst_denormal: dict[str, tuple[float, dict]] = {}
    for row in result["rows"]:
        for name, s in row["systems"].items():
            frac = s.get("optimizer_denormal_fraction")
            if frac is not None and frac > worst_denormal.get(name, (-1.0,))[0]:
                worst_denormal[name] = (frac, row)
    if worst_denormal:
        out.append(
            "denormal share of optimizer state (momentum buffers) after a row, "
            "worst row per system: "
            + "; ".join(
                f"{name} {100 * frac:.2f}% ({row['model']} b={row['batch_size']})"
                for name, (frac, row) in worst_denormal.items()
            )
        )
    return out


# --------------------------------------------------------------------------- CLI


def add_bench_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``bench`` subcommand on an argparse ``subparsers`` object."""
    p = subparsers.add_parser(
        "bench",
        help="time one training epoch: xpnet vs PyTorch and scikit-learn",
        description=(
            "Seconds per training epoch on MNIST-shaped data (60,000 x 784 "
            "float32, 10 classes) for several models and batch sizes, xpnet "
            "against PyTorch eager and scikit-learn on the same device, weights "
            "and optimizer (SGD lr 0.01, momentum 0.9). Writes a table, a JSON "
            "file, a markdown file and a plot."
        ),
    )
    add_bench_arguments(p)
    p.set_defaults(func=run_bench)
    return p


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--device",
        default="all",
        help="auto, cpu, cuda, cuda:N or all (default: all = CPU and every "
        "usable GPU); comma lists allowed",
    )
    p.add_argument(
        "--models",
        default=",".join(MODELS),
        help=f"comma list from {', '.join(MODELS)} (default: all)",
    )
    p.add_argument(
        "--batch-sizes",
        default=None,
        help="comma list (default: " + ",".join(map(str, BATCH_SIZES)) + ")",
    )
    p.add_argument(
        "--batch-sizes-for",
        action="append",
        metavar="MODEL=SIZES",
        help="batch sizes for one model, e.g. wide=128,1024 (repeatable)",
    )
    p.add_argument(
        "--repeats", type=int, default=3, help="timed epochs per row, >= 3 (median)"
    )
    p.add_argument(
        "--warmup", type=int, default=1, help="untimed warm-up epochs (default 1)"
    )
    p.add_argument("--quick", action="store_true", help=QUICK_TEXT)
    p.add_argument(
        "--rows",
        type=int,
        default=None,
        help="rows per epoch (default 60,000; 10,000 with --quick)",
    )
    p.add_argument(
        "--peers",
        default="torch,sklearn",
        help="torch, sklearn, torch,sklearn (default) or none",
    )
    p.add_argument(
        "--synthetic",
        action="store_true",
        help="class-dependent Gaussian blobs instead of real MNIST pixels",
    )
    p.add_argument(
        "--out",
        default=None,
        help="results folder (default: bench/results if it exists, else .)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print a one-line JSON summary as the last line of stdout",
    )
    p.add_argument("--no-plot", action="store_true", help="do not draw the PNG")
    p.add_argument(
        "--gemm-size",
        type=int,
        default=None,
        help="n of the n^3 GEMM reference (default 2048 on CPU, 8192 on GPU)",
    )
    p.add_argument(
        "--note", default="", help="free text stored with the results (why, what)"
    )
    p.add_argument(
        "--append",
        action="store_true",
        help="add rows to today's results file for these devices instead of "
        "starting a new one (rows with the same model, device, batch and rows "
        "are replaced)",
    )
    p.add_argument(
        "--in-process",
        action="store_true",
        help="run all systems in this process (default: one worker process each)",
    )
    p.add_argument(
        "--max-retries",
        type=int,
        default=6,
        help="re-runs per row of epochs disturbed by other processes (default 6)",
    )


def default_out_dir() -> Path:
    candidate = Path("bench") / "results"
    return candidate if candidate.is_dir() else Path(".")


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """A compact, JSON-ready digest of ``result`` (for ``--json``)."""
    return {
        "schema": SCHEMA,
        "complete": result["complete"],
        "paths": result.get("paths", {}),
        "data": result["config"]["data"],
        "skipped": result["peer_messages"],
        "rows": [
            {
                "model": r["model"],
                "device": r["device"],
                "batch_size": r["batch_size"],
                "rows": r["rows"],
                **{f"{k}_s": v["median_s"] for k, v in r["systems"].items()},
                "xpnet_pct_gemm": r["systems"]["xpnet"]["pct_gemm"],
                "ratio_xpnet_torch": r["ratio_xpnet_torch"],
                "ratio_xpnet_sklearn": r["ratio_xpnet_sklearn"],
            }
            for r in result["rows"]
        ],
    }


def run_bench(args: argparse.Namespace) -> int:
    """Entry point of ``xpnet bench``: returns the exit code."""
    plan = plan_from_args(args)
    out_dir = Path(args.out) if args.out else default_out_dir()

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    log(
        f"xpnet bench: devices {', '.join(plan.devices)}; models "
        + ", ".join(f"{m} b={plan.batch_sizes[m]}" for m in plan.models)
        + f"; repeats {plan.repeats}; results in {out_dir}"
    )
    if plan.quick:
        log(QUICK_TEXT)
    result = run_plan(
        plan,
        out_dir=out_dir,
        plot=not args.no_plot,
        log=log,
        argv=sys.argv,
    )
    print(format_report(result))
    for kind, path in result.get("paths", {}).items():
        print(f"{kind}: {path}" if kind != "plot" else path)
    if args.json:
        print(json.dumps(summary(result), separators=(",", ":")))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xpnet.bench")
    sub = parser.add_subparsers(dest="command")
    add_bench_parser(sub)
    args = parser.parse_args(["bench", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.func(args)
    except (XpnetError, DeviceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
