"""The ``xpnet bench`` command line: its options and its entry point.

Light on purpose: ``xpnet --help`` builds this parser, so the module imports
only :mod:`.plan`'s constants; :func:`run_bench` imports the harness (workers,
runners, peers) when the command actually runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import DeviceError, XpnetError
from .plan import (
    BATCH_SIZES,
    MODELS,
    PEERS_TEXT,
    QUICK_TEXT,
    QUIET_WAIT_S,
    SCALING_BATCH_SIZES,
)


def add_bench_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``bench`` subcommand on an argparse ``subparsers`` object."""
    p = subparsers.add_parser(
        "bench",
        help="time one training epoch: xpnet vs PyTorch, scikit-learn, NumPy, JAX",
        description=(
            "Seconds per training epoch on MNIST-shaped data (60,000 x 784 "
            "float32, 10 classes) for several models and batch sizes, xpnet "
            "against PyTorch eager, scikit-learn, a hand-written NumPy loop and "
            "a jitted JAX step on the same device, weights "
            "and optimizer (SGD lr 0.01, momentum 0.9). Writes a table, a JSON "
            "file, a markdown file and a plot."
        ),
    )
    add_bench_arguments(p)
    p.set_defaults(func=run_bench)
    return p


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``xpnet bench`` (validated later by ``plan_from_args``)."""
    p.add_argument(
        "--device",
        default=None,
        help="auto, cpu, cuda, cuda:N or all (default: all = CPU and every "
        "usable GPU; cpu with --ranks); comma lists allowed",
    )
    p.add_argument(
        "--models",
        default=None,
        help=f"comma list from {', '.join(MODELS)} (default: all; "
        + ", ".join(SCALING_BATCH_SIZES)
        + " with --ranks)",
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
        default=None,
        help=f"{PEERS_TEXT}; default all: PyTorch eager, scikit-learn, the "
        "hand-written NumPy loop (the floor) and a jitted JAX step",
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
        "--native-blas",
        action="store_true",
        help="start the timed workers without the variables that force a BLAS "
        "kernel (OPENBLAS_CORETYPE, OPENBLAS_L2_SIZE, MKL_DEBUG_CPU_TYPE, ...), "
        "so they run the machine's own kernel as users' machines do; this "
        "process and the tests keep them",
    )
    p.add_argument(
        "--max-retries",
        type=int,
        default=6,
        help="re-runs per row of epochs disturbed by other processes (default 6)",
    )
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=QUIET_WAIT_S,
        metavar="S",
        help="seconds each row waits for other processes to go quiet before it "
        f"starts anyway (default {QUIET_WAIT_S:g}; 0: no wait)",
    )
    p.add_argument(
        "--ranks",
        default=None,
        metavar="N,M",
        help="scaling run instead: xpnet data-parallel on 1 and N, M, ... MPI "
        "ranks (mpiexec, 1 BLAS thread each) against 1 process with max(N, M) "
        "threads; default models "
        + ", ".join(f"{m} b={min(b)}..{max(b)}" for m, b in SCALING_BATCH_SIZES.items())
        + "; needs mpi4py and mpiexec",
    )
    p.add_argument(
        "--overlap",
        action="store_true",
        help="with --ranks: also time every N > 1 with the all-reduce overlapped "
        "with backward (MPICommunicator(overlap=True): one Iallreduce per "
        "parameter as soon as its layer is done)",
    )


def default_out_dir() -> Path:
    candidate = Path("bench") / "results"
    return candidate if candidate.is_dir() else Path(".")


def run_bench(args: argparse.Namespace) -> int:
    """Entry point of ``xpnet bench``: returns the exit code."""
    from .plan import plan_from_args
    from .report import check_results_folder, print_outcome
    from .results import summary
    from .run import run_plan

    out_dir = Path(args.out) if args.out else default_out_dir()
    check_results_folder(out_dir)  # before any work: refused in one line
    plan = plan_from_args(args)
    if plan.ranks:
        from .scaling import run_scaling_bench

        return run_scaling_bench(plan, out_dir, args)

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
    print_outcome(result, summary, args.json)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m xpnet.bench [options]``: ``xpnet bench`` without the CLI."""
    parser = argparse.ArgumentParser(prog="python -m xpnet.bench")
    sub = parser.add_subparsers(dest="command")
    add_bench_parser(sub)
    args = parser.parse_args(["bench", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.func(args)
    except (XpnetError, DeviceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
