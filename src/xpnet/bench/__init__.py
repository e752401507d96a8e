"""Throughput benchmark: seconds per training epoch, xpnet against its peers.

One epoch = a fresh shuffle plus every step over the data, the last partial
batch included. Each system (xpnet, PyTorch eager, scikit-learn's
``MLPClassifier``, a hand-written NumPy loop, a jitted JAX step) trains the
same model from the same initial weights with the same optimizer (SGD,
momentum 0.9, constant learning rate) in float32, on the same device, with its
data already there. The NumPy loop (the floor: what a NumPy user writes by
hand) and JAX run on the CPU only. Each system is warmed up for one epoch and
then timed for ``repeats`` epochs (median reported); the systems' epochs are
interleaved (xpnet, torch, sklearn, numpy, jax, xpnet, ...) so that slow
drifts of the machine hit all of them alike. On a GPU the device is
synchronised before the clock is read.

Data: real MNIST pixels and labels (the 15,000 images of the bundled
``mnist-sample``, scaled to [0, 1] and tiled to 60,000 rows) or, with
``synthetic=True``, class-dependent Gaussian blobs (see :mod:`.data`).

FLOPs count the matrix products only: forward ``2 N P`` and backward
``4 N P - 2 N d0 d1`` (no system computes the first layer's input gradient),
with ``P`` the number of weights (biases excluded) and ``N`` the rows.

Modules, each importing only those above it::

    plan         models, batch sizes, settings, FLOPs, the validated Plan
    cli          the ``xpnet bench`` options (light: plan only) and entry point
    data         MNIST or synthetic training data
    peers        which peer can run where (imports a peer only when asked)
    runners      xpnet / PyTorch / scikit-learn / NumPy / JAX runners: one epoch
                 per call
    timing       clocks, quiet-CPU checks, interleaved medians
    machine      versions, CPU/GPU facts, the GEMM ceiling (environment)
    workers      one spawned process per system (or in-process)
    results      the JSON record: rows, ratios, merging, remarks
    report       text and markdown tables; writes the files
    plot         the PNG
    run          the whole run of a plan

Run it as ``xpnet bench`` (see :func:`.cli.add_bench_parser`) or
``python -m xpnet.bench``. The names below are importable from this package
too (``from xpnet import bench as B; B.load_data(...)``): each loads its
module on first use, so importing the package costs nothing. Type checkers see
them as ``Any`` here; import from the modules for their types.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "plan": (
        "SCHEMA MODELS BATCH_SIZES SYSTEMS PEERS LR MOMENTUM DTYPE ROWS CLASSES "
        "SEED QUICK QUICK_TEXT epoch_flops weight_count Plan parse_models "
        "parse_peers parse_devices plan_from_args"
    ),
    "cli": "add_bench_parser add_bench_arguments default_out_dir run_bench main",
    "data": "REAL_DATA_TEXT SYNTHETIC_TEXT load_data",
    "peers": "peer_skip_reason peer_messages pin_jax_threads requested_threads",
    "runners": (
        "Runner XpnetRunner TorchRunner SklearnRunner NumpyRunner JaxRunner "
        "make_runners make_runner "
        "runner_extras"
    ),
    "timing": (
        "CONTENTION_CORES EpochTiming cpu_ticks foreign_cores contended "
        "timed_epoch wait_for_quiet InProcess time_runners"
    ),
    "machine": "measure_gemm environment",
    "workers": "Worker",
    "results": (
        "TIMING_TEXT FLOPS_TEXT ISOLATION_TEXT IN_PROCESS_TEXT CONTENTION_TEXT "
        "DENORMAL_TEXT make_row add_row remarks output_stem summary free_stem "
        "latest_stem combine_gemm rescale_pct_gemm over_ceiling_notes"
    ),
    "report": "TABLE_COLUMNS table_cells format_table header_lines format_report "
    "write_outputs",
    "plot": "plot_results results_figure",
    "run": "run_plan",
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names.split()}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
