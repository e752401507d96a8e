"""pytest-benchmark suite: seconds per training epoch, xpnet against its peers.

Uses the harness of :mod:`xpnet.bench` (same runners, same initial weights,
same optimizer), parametrised over device x model x batch size x system.

Default (CI) is a smoke mode: 2,048 rows, batch sizes 64 and 512, ``wide``
shrunk to 256 rows at batch 128, one warm-up and one timed epoch, and no
timing assertions: each system must run and return sane figures. With
``XPNET_BENCH_FULL=1`` the real sizes run (60,000 rows, all batch sizes, three
timed epochs): that takes hours on a small CPU, so pick with ``-k``, e.g.
``XPNET_BENCH_FULL=1 pytest bench -k "mlp512 and 128"``. For the full table,
JSON and plot use ``xpnet bench`` instead (see bench/README.md).
"""

from __future__ import annotations

import math
import os

import pytest

import xpnet
from xpnet import bench as B
from xpnet.errors import DeviceError

FULL = os.environ.get("XPNET_BENCH_FULL", "") == "1"

if FULL:
    ROWS = {m: B.ROWS for m in B.MODELS}
    BATCHES = {m: list(B.BATCH_SIZES) for m in B.MODELS}
    ROUNDS = 3
else:
    ROWS = {"seed": 2048, "mlp512": 2048, "wide": 256}
    BATCHES = {"seed": [64, 512], "mlp512": [64, 512], "wide": [128]}
    ROUNDS = 1

CASES = [(m, b) for m in B.MODELS for b in BATCHES[m]]


def _devices() -> list[str]:
    devices = ["cpu"]
    try:
        devices.append(xpnet.resolve("cuda").device_name)
    except DeviceError:
        devices.append("cuda")  # collected, then skipped with the reason
    return devices


_DATA: dict[int, tuple] = {}


def _data(rows: int):
    if rows not in _DATA:
        _DATA.clear()
        _DATA[rows] = B.load_data(rows)[:2]
    return _DATA[rows]


@pytest.mark.parametrize("system", B.SYSTEMS)
@pytest.mark.parametrize(("model", "batch_size"), CASES)
@pytest.mark.parametrize("device", _devices())
def test_epoch(benchmark, device, model, batch_size, system):
    try:
        backend = xpnet.resolve(device)
    except DeviceError as exc:
        pytest.skip(f"{device}: {exc}")
    if system != "xpnet":
        reason = B.peer_skip_reason(system, backend.device_name)
        if reason:
            pytest.skip(f"{system}: {reason}")
    sizes, rows = B.MODELS[model], ROWS[model]
    X, y = _data(rows)
    peers = [] if system == "xpnet" else [system]
    runners, _ = B.make_runners(sizes, X, y, batch_size, backend, peers)
    runner = runners[system]
    losses: list[float] = []
    benchmark.group = f"{model} {device} b={batch_size}"
    benchmark.extra_info.update(
        model=model,
        sizes=list(sizes),
        rows=rows,
        batch_size=batch_size,
        flops_per_epoch=B.epoch_flops(sizes, rows)["total"],
        mode="full" if FULL else "smoke",
    )
    try:
        benchmark.pedantic(
            lambda: losses.append(runner.run_epoch()),
            rounds=ROUNDS,
            iterations=1,
            warmup_rounds=1,
        )
    finally:
        for r in runners.values():
            r.close()
    # Sane figures, no timing assertions: a finite loss below the chance level
    # plus a margin, and positive finite derived rates.
    assert losses and all(math.isfinite(v) and 0 < v < 3.0 for v in losses)
    stats = getattr(benchmark, "stats", None)
    if stats is not None:  # None under --benchmark-disable
        times = list(stats.stats.data)
        timing = {"times": times, "median_s": stats.stats.median, "losses": losses}
        row = B.make_row(
            model, sizes, device, batch_size, rows, {system: timing}, gemm={}
        )
        figures = row["systems"][system]
        assert figures["median_s"] > 0
        assert math.isfinite(figures["gflops"]) and figures["gflops"] > 0
        assert figures["samples_per_s"] > 0
        benchmark.extra_info["gflops"] = figures["gflops"]
