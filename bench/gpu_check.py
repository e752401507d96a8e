"""The Python steps of ``bench/gpu_check.sh`` (the first run on a CUDA GPU).

Subcommands:

- ``agreement --out FILE``: for every GPU backend here (CuPy on each GPU,
  PyTorch on ``cuda:0``) trains the same models from the same seed as NumPy
  does and compares the weights (max over parameters of
  ``max|a - b| / max|b|``): three nets (784-64-10 and the bench's seed
  784-16-16-16-10 and mlp512 784-512-512-10), SGD with momentum, Adam and SGD
  under a step-decay schedule, 2 epochs of 1,037 rows at batch 64 (the last
  batch of each epoch is partial), float32 and float64. CuPy is also compared
  with torch-CUDA directly. Then: ~10 CuPy steps under
  ``cupyx.allow_synchronize(False)`` (raises on any host-device sync), 10
  torch steps under ``torch.cuda.set_sync_debug_mode("error")``, and xpnet's
  step on torch-CUDA captured in a CUDA graph (``xpnet.native_torch``)
  against the eager step, and the bench's PyTorch CUDA-graph peer against
  PyTorch eager. Everything goes into one JSON file, rewritten after
  each comparison, and a table on stdout.
- ``graph-peers --out FILE``: the bench's CUDA-graph peers whose check in
  that file passed (PyTorch's graph against PyTorch eager, xpnet's graph step
  against xpnet eager): only those are timed, so that a capture that fails on
  the device cannot take the whole sweep down.
- ``gpu-tests --junit FILE``: the GPU tests with the real CuPy only (no
  stand-in in the process); fails when no CuPy test ran (all skipped).
- ``summary --out DIR --failed 0|1 --steps FILE [--planned STEPS]``: the
  steps, the tables, and
  which files to copy into ``bench/results/`` under which names.

float64 must agree to :data:`TOLERANCE` ``1e-9``; float32 to ``2e-4`` with
SGD and ``2e-2`` with Adam: a float32 gradient that is nearly zero can change
sign with the summation order (cuBLAS vs OpenBLAS), and Adam turns any sign
into a step of ``lr`` (1e-3 here, against weights of ~0.1).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
NETS = {
    "small": [784, 64, 10],
    "seed": [784, 16, 16, 16, 10],
    "mlp512": [784, 512, 512, 10],
}
OPTIMIZERS = ("sgd", "adam", "sgd-schedule")
TOLERANCE = {
    ("float64", "sgd"): 1e-9,
    ("float64", "adam"): 1e-9,
    ("float64", "sgd-schedule"): 1e-9,
    ("float32", "sgd"): 2e-4,
    ("float32", "adam"): 2e-2,
    ("float32", "sgd-schedule"): 2e-4,
}
ROWS, BATCH, EPOCHS = 1037, 64, 2  # 1037 = 16 * 64 + 13: a partial last batch
#: the tolerance of the CUDA-graph step against the eager one (same kernels)
GRAPH_TOLERANCE = 1e-6


def _optimizer(name: str) -> Any:
    import xpnet
    from xpnet.schedules import StepDecay

    if name == "sgd":
        return xpnet.SGD(lr=0.01, momentum=0.9)
    if name == "adam":
        return xpnet.Adam(1e-3)
    return xpnet.SGD(lr=StepDecay(0.02, step_size=10, gamma=0.5), momentum=0.9)


def _data() -> tuple[Any, Any]:
    from xpnet.datasets import load_dataset
    from xpnet.preprocessing import preprocess

    data = preprocess(load_dataset("mnist-sample"), dtype="float64")
    return data.x_train[:ROWS], data.y_train[:ROWS]


def train(backend: Any, net: str, optimizer: str, dtype: str, X, y, step=None):
    """The weights (host arrays) after :data:`EPOCHS` epochs; ``step``: a
    function of the model that makes its training step (default: its own)."""
    import xpnet

    model = xpnet.mlp(
        NETS[net], device=backend, dtype=dtype, seed=0, optimizer=_optimizer(optimizer)
    )
    kwargs = {} if step is None else {"step": step(model)}
    history = xpnet.training.fit(
        model, X.astype(dtype), y, epochs=EPOCHS, batch_size=BATCH, **kwargs
    )
    return model.state_dict(), history["loss"]


def max_relative(a: dict[str, Any], b: dict[str, Any]) -> float:
    """max over parameters of ``max|a - b| / max|b|`` (host arrays)."""
    import numpy as np

    worst = 0.0
    for key in b:
        scale = max(float(np.max(np.abs(b[key]))), 1e-30)
        diff = float(np.max(np.abs(np.asarray(a[key]) - b[key])))
        worst = max(worst, diff / scale if np.isfinite(diff) else float("inf"))
    return worst


def gpu_backends() -> tuple[list[tuple[str, Any]], list[str]]:
    """(name, backend) of every GPU backend here, and why the others are not."""
    import xpnet
    from xpnet.backend import gpu_facts, resolve

    found, missing = [], []
    for gpu in gpu_facts():
        if "error" in gpu:
            missing.append(f"cupy {gpu['device']}: {gpu['error']}")
            continue
        found.append((f"cupy:{gpu['device']}", resolve(gpu["device"], "cupy")))
    if not gpu_facts():
        missing.append("cupy: not installed")
    try:
        found.append(("torch:cuda:0", resolve("cuda:0", "torch")))
    except xpnet.DeviceError as exc:
        missing.append(f"torch:cuda:0: {exc}")
    return found, missing


class Record:
    """The JSON file, rewritten (atomically) after every entry."""

    def __init__(self, path: Path, head: dict[str, Any]) -> None:
        self.path, self.data = path, {**head, "agreement": [], "complete": False}
        self.save()

    def add(self, key: str, value: Any) -> None:
        if isinstance(self.data.get(key), list):
            self.data[key].append(value)
        else:
            self.data[key] = value
        self.save()

    def save(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str))
        os.replace(tmp, self.path)


def compare_all(record: Record, nets: list[str], backends: list[tuple[str, Any]]):
    """Every backend against NumPy, and CuPy against torch-CUDA, per case."""
    from xpnet.backend import resolve

    X, y = _data()
    numpy = resolve("cpu", "numpy")
    failures = 0
    for net in nets:
        for optimizer in OPTIMIZERS:
            for dtype in ("float32", "float64"):
                reference, ref_loss = train(numpy, net, optimizer, dtype, X, y)
                got: dict[str, Any] = {}
                for name, backend in backends:
                    start = time.perf_counter()
                    entry = {"case": f"{net} {optimizer} {dtype}", "backend": name}
                    try:
                        got[name], loss = train(backend, net, optimizer, dtype, X, y)
                        error = max_relative(got[name], reference)
                        entry["last_loss"] = [loss[-1], ref_loss[-1]]
                    except Exception as exc:
                        error = float("inf")
                        entry["error"] = f"{type(exc).__name__}: {exc}"
                        traceback.print_exc()
                    failures += _report(record, entry, "numpy", error, dtype, optimizer)
                    entry["seconds"] = round(time.perf_counter() - start, 3)
                cupy = [n for n in got if n.startswith("cupy:cuda:0")]
                if cupy and "torch:cuda:0" in got:
                    error = max_relative(got[cupy[0]], got["torch:cuda:0"])
                    entry = {
                        "case": f"{net} {optimizer} {dtype}",
                        "backend": cupy[0],
                    }
                    failures += _report(
                        record, entry, "torch:cuda:0", error, dtype, optimizer
                    )
    return failures


def _report(record, entry, against, error, dtype, optimizer) -> int:
    tolerance = TOLERANCE[(dtype, optimizer)]
    ok = error <= tolerance
    entry.update(
        against=against, max_relative_difference=error, tolerance=tolerance, ok=ok
    )
    record.add("agreement", entry)
    print(
        f"{entry['case']:<26} {entry['backend']:<13} vs {against:<13} "
        f"{error:9.2e} (tol {tolerance:g}) {'ok' if ok else 'FAIL'}"
        + (f"  {entry['error']}" if "error" in entry else ""),
        flush=True,
    )
    return 0 if ok else 1


def steps_on(backend: Any, X, y, count: int = 10):
    """A model's step, warmed up, with ``count`` more steps to run."""
    import xpnet

    model = xpnet.mlp(NETS["small"], device=backend, seed=0)
    with backend.context():
        xb = model.to_device(X[:BATCH], "float32")
        yb = model.loss.targets(model.to_device(y[:BATCH]), model.out_features)
        step = model.step_function()
        update = getattr(step, "update", None) or (lambda a, b: step(a, b)[1])
        update(xb, yb)  # lazily built state (optimizer slots) may sync once
        backend.synchronize()
    return model, lambda: [update(xb, yb) for _ in range(count)]


def cupy_sync_check(X, y) -> dict[str, Any]:
    """~10 CuPy steps inside ``cupyx.allow_synchronize(False)``."""
    from xpnet.backend import resolve

    try:
        backend = resolve("cuda:0", "cupy")
        import cupyx
    except Exception as exc:
        return {"ran": False, "reason": f"{type(exc).__name__}: {exc}"}
    _, run = steps_on(backend, X, y)
    try:
        with backend.context(), cupyx.allow_synchronize(False):
            run()
        backend.synchronize()
    except Exception as exc:
        return {"ran": True, "ok": False, "error": f"{type(exc).__name__}: {exc}"}
    return {"ran": True, "ok": True}


def torch_sync_check(X, y) -> dict[str, Any]:
    """10 torch-CUDA steps under ``torch.cuda.set_sync_debug_mode("error")``."""
    import xpnet
    from xpnet.backend import resolve

    try:
        backend = resolve("cuda:0", "torch")
    except xpnet.DeviceError as exc:
        return {"ran": False, "reason": str(exc)}
    import torch

    _, run = steps_on(backend, X, y)
    torch.cuda.set_sync_debug_mode("error")
    try:
        with backend.context():
            run()
    except RuntimeError as exc:
        return {"ran": True, "ok": False, "error": str(exc).splitlines()[0]}
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return {"ran": True, "ok": True}


def graph_check(X, y) -> dict[str, Any]:
    """xpnet's step on torch-CUDA in a CUDA graph vs the eager step: mlp512 and
    seed, SGD, float32, 2 epochs with a partial last batch."""
    import xpnet
    from xpnet.backend import resolve

    try:
        backend = resolve("cuda:0", "torch")
    except xpnet.DeviceError as exc:
        return {"ran": False, "reason": str(exc)}
    from xpnet.native_torch import CudaGraphStep

    worst = 0.0
    for net in ("seed", "mlp512"):
        eager, _ = train(backend, net, "sgd", "float32", X, y)
        try:
            graphed, _ = train(backend, net, "sgd", "float32", X, y, CudaGraphStep)
        except Exception as exc:
            traceback.print_exc()
            return {"ran": True, "ok": False, "error": f"{type(exc).__name__}: {exc}"}
        worst = max(worst, max_relative(graphed, eager))
    ok = worst <= GRAPH_TOLERANCE
    return {
        "ran": True,
        "ok": ok,
        "max_relative_difference": worst,
        "tolerance": GRAPH_TOLERANCE,
    }


def torch_graph_peer_check(X, y) -> dict[str, Any]:
    """The bench's PyTorch CUDA-graph peer against PyTorch eager: 3 epochs of
    the seed net, the same weights and permutations, loss by loss (a peer
    that failed in the bench would take the whole sweep down with it)."""
    try:
        import torch
    except Exception as exc:
        return {"ran": False, "reason": f"torch: {type(exc).__name__}: {exc}"}
    if not torch.cuda.is_available():
        return {"ran": False, "reason": "torch sees no CUDA GPU"}
    from xpnet.backend import resolve
    from xpnet.bench.runners import TorchGraphRunner, TorchRunner, XpnetRunner

    X32, labels = X.astype("float32"), y.astype("int64")
    sizes = NETS["seed"]
    state = XpnetRunner(sizes, X32, labels, BATCH, resolve("cpu")).initial_state()
    eager = TorchRunner(sizes, X32, labels, BATCH, "cuda:0", state)
    graphed = TorchGraphRunner(sizes, X32, labels, BATCH, "cuda:0", state)
    pairs = [(eager.run_epoch(), graphed.run_epoch()) for _ in range(3)]
    worst = max(abs(a - b) / abs(a) for a, b in pairs)
    return {
        "ran": True,
        "ok": worst <= 1e-4,
        "losses": pairs,
        "max_relative_difference": worst,
        "tolerance": 1e-4,
    }


def agreement(args: argparse.Namespace) -> int:
    import xpnet
    from xpnet.backend import available_backends, gpu_facts

    backends, missing = gpu_backends()
    record = Record(
        args.out,
        {
            "xpnet": xpnet.__version__,
            "python": platform.python_version(),
            "backends": available_backends(),
            "gpus": gpu_facts(),
            "torch_cuda": _torch_cuda(),
            "missing": missing,
            "ops": {name: repr(b.ops) for name, b in backends},
        },
    )
    for line in missing:
        print(f"not compared: {line}")
    nets = args.nets.split(",")
    failures = compare_all(record, nets, backends) if backends else 1
    X, y = _data()
    for key, check in (
        ("cupy_sync_check", cupy_sync_check),
        ("torch_sync_check", torch_sync_check),
        ("graph_check", graph_check),
        ("torch_graph_check", torch_graph_peer_check),
    ):
        try:
            result = check(X, y)
        except Exception as exc:
            traceback.print_exc()
            result = {"ran": True, "ok": False, "error": f"{type(exc).__name__}: {exc}"}
        record.add(key, result)
        verdict = "ok" if result.get("ok") else result.get("error", "FAIL")
        print(
            f"{key}: " + (verdict if result["ran"] else f"not run ({result['reason']})")
        )
        failures += result["ran"] and not result.get("ok")
    record.add("complete", True)
    if not backends:
        print("no GPU backend found: nothing was compared")
    return 1 if failures else 0


def _torch_cuda() -> dict[str, Any]:
    try:
        import torch
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    facts: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.version.cuda}
    if torch.cuda.is_available():
        facts["device"] = torch.cuda.get_device_name(0)
    return facts


#: the bench's CUDA-graph peers and the agreement check each needs to pass
GRAPH_PEERS = {"torch-graph": "torch_graph_check", "xpnet-graph": "graph_check"}


def graph_peers(args: argparse.Namespace) -> int:
    """Print the CUDA-graph peers whose check passed, comma-separated with a
    leading comma (nothing when none did), for the bench's ``--peers``."""
    try:
        record = json.loads(args.out.read_text())
    except (OSError, ValueError):
        record = {}
    print(
        "".join(
            f",{p}" for p, key in GRAPH_PEERS.items() if record.get(key, {}).get("ok")
        )
    )
    return 0


#: the test files whose ``backend`` fixture has a real-CuPy parameter, and the
#: GPU-only tests; the stand-in's files are left out (one CuPy per process)
GPU_TEST_FILES = (
    "tests/test_gpu_cupy.py",
    "tests/test_activations.py",
    "tests/test_layers.py",
    "tests/test_losses.py",
    "tests/test_model.py",
    "tests/test_optimizers.py",
    "tests/test_parameters.py",
    "tests/test_training.py",
)


def gpu_tests(args: argparse.Namespace) -> int:
    """pytest on the real CuPy only; a run in which no CuPy test ran fails."""
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-rfE",
        "-p",
        "no:cacheprovider",
        "-k",
        "cupy and not fake",
        f"--junitxml={args.junit}",
        *GPU_TEST_FILES,
    ]
    print(" ".join(command), flush=True)
    status = subprocess.call(command, cwd=ROOT)
    ran, skipped, failed = _junit_counts(args.junit)
    print(f"gpu-tests: {ran} ran ({failed} failed), {skipped} skipped")
    if status == 0 and ran == 0:
        print("gpu-tests: FAILED: no CuPy test ran (is CuPy usable? see the skips)")
        return 1
    return status


def _junit_counts(path: Path) -> tuple[int, int, int]:
    import xml.etree.ElementTree as ET

    try:
        cases = list(ET.parse(path).iter("testcase"))
    except (OSError, ET.ParseError):
        return 0, 0, 0
    skipped = sum(1 for c in cases if c.find("skipped") is not None)
    failed = sum(
        1 for c in cases if c.find("failure") is not None or c.find("error") is not None
    )
    return len(cases) - skipped, skipped, failed


def _slug(text: str) -> str:
    text = re.sub(r"^nvidia\s+", "", text.strip().lower())
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-") or "gpu"


def summary(args: argparse.Namespace) -> int:
    """The steps, the tables, and which files go into bench/results/."""
    out: Path = args.out
    steps = args.steps.read_text() if args.steps.is_file() else ""
    print(steps)
    results = dict(re.findall(r"^\| (\S+) \| ([^|]+?) \|", steps, flags=re.M))
    results.pop("step", None)
    agreement_path = out / "agreement.json"
    facts: dict[str, Any] = {}
    if agreement_path.is_file():
        facts = json.loads(agreement_path.read_text())
        rows = facts.get("agreement", [])
        bad = [r for r in rows if not r.get("ok")]
        print(f"agreement: {len(rows) - len(bad)} of {len(rows)} comparisons ok")
        for r in bad:
            print(
                f"  FAIL {r['case']} {r['backend']} vs {r['against']}: "
                f"{r['max_relative_difference']:.2e} {r.get('error', '')}"
            )
    benches = sorted(p for p in out.glob("*.json") if p.name != "agreement.json")
    for path in benches:
        md = path.with_suffix(".md")
        if md.is_file():
            print(f"\n{md.name}:\n{md.read_text()}")
    gpu = next((g for g in facts.get("gpus", []) if "name" in g), {})
    name = gpu.get("name") or facts.get("torch_cuda", {}).get("device", "")
    day = datetime.date.today().isoformat()
    stem = f"gpu-{_slug(name)}-{day}" if name else f"gpu-{day}"
    versions = ", ".join(
        f"{k} {v}"
        for k, v in {
            "CUDA runtime": gpu.get("cuda_runtime"),
            "driver": gpu.get("cuda_driver"),
            "CuPy": facts.get("backends", {}).get("cupy"),
            "torch": facts.get("torch_cuda", {}).get("torch"),
            "xpnet": facts.get("xpnet"),
        }.items()
        if v
    )
    copies = [("gpu_check.log", f"{stem}.log"), ("summary.md", f"{stem}-summary.md")]
    if agreement_path.is_file():
        copies.append(("agreement.json", f"{stem}-agreement.json"))
    for path in benches:
        for suffix in (".json", ".md"):
            if path.with_suffix(suffix).is_file():
                copies.append((path.with_suffix(suffix).name, f"{stem}{suffix}"))
    print(
        f"\ndevice: {name or 'no GPU found'}" + (f" ({versions})" if versions else "")
    )
    if args.failed == "0":
        print("every step passed. Copy these files into bench/results/ and commit:")
    else:
        planned = ["install", *args.planned.split()]
        failed = [s for s in planned if results.get(s) != "ok"]
        print(
            f"NOT every step passed ({', '.join(failed)} did not): commit these as "
            "the record of a failed first run only after reading the log:"
        )
    for src, dst in copies:
        print(f"  cp {out / src} bench/results/{dst}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("agreement")
    p.add_argument("--out", type=Path, required=True, help="the JSON file")
    p.add_argument(
        "--nets", default=",".join(NETS), help="comma list of " + ", ".join(NETS)
    )
    p.set_defaults(func=agreement)
    p = sub.add_parser("graph-peers")
    p.add_argument("--out", type=Path, required=True, help="agreement's JSON file")
    p.set_defaults(func=graph_peers)
    p = sub.add_parser("gpu-tests")
    p.add_argument("--junit", type=Path, required=True, help="pytest's JUnit XML")
    p.set_defaults(func=gpu_tests)
    p = sub.add_parser("summary")
    p.add_argument("--out", type=Path, required=True, help="the results folder")
    p.add_argument("--failed", default="0", help="1 if a step failed")
    p.add_argument("--steps", type=Path, required=True, help="summary.md")
    p.add_argument(
        "--planned",
        default="info agreement bench gpu-tests",
        help="the steps that were to run after install (space-separated)",
    )
    p.set_defaults(func=summary)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
