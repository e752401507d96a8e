"""Agreement and sync checks for a first run on a CUDA GPU (see gpu_check.sh).

For each GPU backend and device it trains the same model from the same seed
for one epoch on the bundled MNIST sample next to NumPy, and compares the
weights: float64 must agree to 1e-10 (relative, max over all parameters),
float32 to 1e-4 (float32 rounding of a different summation order in cuBLAS vs
OpenBLAS, accumulated over ~80 steps). With torch on CUDA it then runs steps
under ``torch.cuda.set_sync_debug_mode("error")``, which raises on any
host-device synchronisation inside a step. Results go to one JSON file.

``--dry-run`` compares array-api-strict (on a non-default device) with NumPy
instead, so the script itself is tested without a GPU.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import xpnet
from xpnet.atomic import atomic_write
from xpnet.backend import available_backends, gpu_facts, resolve
from xpnet.datasets import load_dataset
from xpnet.preprocessing import preprocess

TOLERANCE = {"float64": 1e-10, "float32": 1e-4}


def _data(rows: int) -> tuple[np.ndarray, np.ndarray]:
    data = preprocess(load_dataset("mnist-sample"), dtype="float64")
    return data.x_train[:rows], data.y_train[:rows]


def _train(backend: xpnet.Backend, dtype: str, X, y) -> dict[str, np.ndarray]:
    model = xpnet.mlp([784, 64, 10], device=backend, dtype=dtype, seed=0)
    model.fit(X.astype(dtype), y, epochs=1, batch_size=64)
    return model.state_dict()


def _max_relative(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    worst = 0.0
    for key in a:
        scale = max(float(np.max(np.abs(a[key]))), 1e-30)
        worst = max(worst, float(np.max(np.abs(a[key] - b[key]))) / scale)
    return worst


def _backends(dry_run: bool) -> list[tuple[str, xpnet.Backend]]:
    if dry_run:
        import array_api_strict

        strict = resolve("cpu", "array-api-strict")
        other = array_api_strict.Device("device1")
        return [
            (
                "array-api-strict:device1",
                xpnet.Backend(strict.name, strict.xp, other, "cpu"),
            )
        ]
    found = []
    for gpu in gpu_facts():
        if "error" in gpu:
            continue
        found.append((f"cupy:{gpu['device']}", resolve(gpu["device"], "cupy")))
    try:
        found.append(("torch:cuda:0", resolve("cuda:0", "torch")))
    except xpnet.DeviceError:
        pass
    return found


def agreement(dry_run: bool, rows: int) -> list[dict[str, Any]]:
    X, y = _data(rows)
    reference = {d: _train(resolve("cpu", "numpy"), d, X, y) for d in TOLERANCE}
    results = []
    for name, backend in _backends(dry_run):
        for dtype, tolerance in TOLERANCE.items():
            start = time.perf_counter()
            error = _max_relative(reference[dtype], _train(backend, dtype, X, y))
            results.append(
                {
                    "backend": name,
                    "dtype": dtype,
                    "max_relative_difference": error,
                    "tolerance": tolerance,
                    "ok": error <= tolerance,
                    "seconds": time.perf_counter() - start,
                }
            )
            print(
                f"{name} {dtype}: max relative difference {error:.2e} "
                f"(tolerance {tolerance:g}) {'ok' if error <= tolerance else 'FAIL'}"
            )
    if not results:
        print("no usable GPU backend found")
    return results


def sync_check(rows: int) -> dict[str, Any]:
    """Steps with torch on CUDA under sync debug mode "error"."""
    try:
        backend = resolve("cuda:0", "torch")
    except xpnet.DeviceError as exc:
        return {"ran": False, "reason": str(exc)}
    import torch

    X, y = _data(rows)
    model = xpnet.mlp([784, 64, 10], device=backend, seed=0)
    xb = model.to_device(X[:64], "float32")
    yb = model.to_device(y[:64])
    step = model.step_function()
    step.update(xb, yb)  # warm-up: lazily built state may sync once
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(10):
            step.update(xb, yb)
    except RuntimeError as exc:
        return {"ran": True, "ok": False, "error": str(exc).splitlines()[0]}
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return {"ran": True, "ok": True}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="the JSON file")
    parser.add_argument("--rows", type=int, default=5000, help="training rows")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="array-api-strict on device1 instead of the GPU",
    )
    args = parser.parse_args(argv)
    record = {
        "xpnet": xpnet.__version__,
        "python": platform.python_version(),
        "backends": available_backends(),
        "gpus": gpu_facts(),
        "agreement": agreement(args.dry_run, args.rows),
        "sync_check": {"ran": False, "reason": "dry run"}
        if args.dry_run
        else sync_check(args.rows),
    }
    with atomic_write(args.out) as f:
        f.write(json.dumps(record, indent=1).encode())
    failed = [r for r in record["agreement"] if not r["ok"]]
    sync = record["sync_check"]
    if sync.get("ran"):
        print(f"torch sync check: {'ok' if sync['ok'] else 'FAIL ' + sync['error']}")
    ok = not failed and sync.get("ok", True) and bool(record["agreement"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
