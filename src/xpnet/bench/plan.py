"""What the benchmark runs: the models, batch sizes, rows and training settings,
their FLOP counts, and the validated :class:`Plan` built from the command line.

Light on purpose (no NumPy, no peers): ``xpnet --help`` reads these constants.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypedDict

from ..errors import XpnetError

SCHEMA = "xpnet-bench/1"
#: the schema of a scaling run's results (``xpnet bench --ranks``)
SCALING_SCHEMA = "xpnet-bench-scaling/1"

#: model name -> layer sizes (ReLU between Dense layers, softmax cross-entropy)
MODELS: dict[str, tuple[int, ...]] = {
    "seed": (784, 16, 16, 16, 10),
    "mlp512": (784, 512, 512, 10),
    "wide": (784, 4096, 4096, 10),
}
BATCH_SIZES = (32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
#: a scaling run's default models and batch sizes (``--ranks``)
SCALING_BATCH_SIZES: dict[str, tuple[int, ...]] = {
    "mlp512": (512, 1024, 2048, 4096, 8192),
    "seed": (128, 256, 512, 1024, 2048),
}
SYSTEMS = (
    "xpnet",
    "pytorch",
    "sklearn",
    "numpy",
    "jax",
    "pytorch-graph",
    "xpnet-graph",
)
#: numpy: the hand-written NumPy loop (the floor); jax: one jitted JAX step;
#: pytorch-graph: PyTorch's step captured in a CUDA graph (GPUs only);
#: xpnet-graph: xpnet's step on torch-CUDA in a CUDA graph (an experiment,
#: only when asked for: xpnet.native_torch.CudaGraphStep)
PEERS = ("pytorch", "sklearn", "numpy", "jax", "pytorch-graph", "xpnet-graph")
#: the peers run when --peers is not given
DEFAULT_PEERS = ("pytorch", "sklearn", "numpy", "jax", "pytorch-graph")
#: the peers that run on CUDA devices only
CUDA_ONLY_PEERS = ("pytorch-graph", "xpnet-graph")
PEER_ALIASES = {
    "torch": "pytorch",
    "pytorch": "pytorch",
    "torch-graph": "pytorch-graph",
    "pytorch-graph": "pytorch-graph",
    "xpnet-graph": "xpnet-graph",
    "sklearn": "sklearn",
    "scikit-learn": "sklearn",
    "numpy": "numpy",
    "jax": "jax",
}
#: what ``--peers`` accepts, for help and error texts
PEERS_TEXT = (
    "a comma list of torch, sklearn, numpy, jax, torch-graph, xpnet-graph (or none)"
)

LR = 0.01
MOMENTUM = 0.9
DTYPE = "float32"
ROWS = 60_000
CLASSES = 10
SEED = 0
#: seconds slept before each epoch so that idle thread pools stop spinning
SETTLE_S = 0.2
#: seconds a row (or a GEMM) waits for a quiet machine before it starts anyway
#: (``--quiet-wait``; tuned for a small shared VM)
QUIET_WAIT_S = 30.0


class QuickMode(TypedDict):
    """What ``--quick`` changes (printed in the output as :data:`QUICK_TEXT`)."""

    rows: int
    batch_sizes: tuple[int, ...]
    wide_rows: int
    wide_batch_sizes: tuple[int, ...]


QUICK: QuickMode = {
    "rows": 10_000,
    "batch_sizes": (128, 1024),
    "wide_rows": 256,
    "wide_batch_sizes": (128,),
}
QUICK_TEXT = (
    "quick mode: 10,000 rows per epoch and batch sizes 128, 1024 for seed and "
    "mlp512; wide on 256 rows at batch 128 only; repeats as given"
)


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


@dataclass
class Plan:
    """What to run: devices, models and their batch sizes, rows, repeats."""

    devices: list[str]
    models: list[str]
    batch_sizes: dict[str, list[int]]
    rows: dict[str, int]
    repeats: int = 3
    warmup: int = 1
    peers: list[str] = field(default_factory=lambda: list(DEFAULT_PEERS))
    synthetic: bool = False
    quick: bool = False
    gemm_size: dict[str, int] = field(default_factory=dict)
    lr: float = LR
    note: str = ""
    device_notes: list[str] = field(default_factory=list)
    isolate: bool = True
    append: bool = False
    max_retries: int = 6
    settle_s: float = SETTLE_S
    #: seconds to wait for a quiet machine before each row (0: do not wait)
    quiet_wait_s: float = QUIET_WAIT_S
    #: a scaling run (``--ranks``): the rank counts, 1 first; empty otherwise
    ranks: list[int] = field(default_factory=list)
    #: with ``ranks``: also time each N > 1 with the all-reduce overlapped
    overlap: bool = False
    #: spawn the timed workers without the variables that force a BLAS kernel
    native_blas: bool = False


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
        if part not in PEER_ALIASES:
            raise XpnetError(f"unknown peer {part!r} in --peers: use {PEERS_TEXT}")
        peers.append(PEER_ALIASES[part])
    return list(dict.fromkeys(peers))


def parse_devices(text: str, notes: list[str] | None = None) -> list[str]:
    """``auto | cpu | cuda | cuda:N | all`` (comma lists allowed) -> device names.

    ``all`` is the CPU plus every GPU that CuPy can use; when there is none, the
    reason is appended to ``notes``. Unusable explicit devices raise
    :class:`~xpnet.errors.DeviceError`.
    """
    from .. import backend

    devices: list[str] = []
    for part in str(text).split(","):
        part = part.strip().lower()
        if part == "all":
            devices.append("cpu")
            _cupy, count, reason = backend.cupy_gpu_count()
            devices += [f"cuda:{i}" for i in range(count)]
            if not count and notes is not None:
                notes.append(f"cuda: not benchmarked ({reason})")
        elif part == "auto":
            devices.append(backend.resolve("auto").device_name)
        elif part:
            devices.append(backend.resolve(part).device_name)
    if not devices:
        raise XpnetError("--device is empty: use auto, cpu, cuda, cuda:N or all")
    return list(dict.fromkeys(devices))


def parse_ranks(text: str) -> list[int]:
    """``--ranks 1,2`` -> ``[1, 2]``; 1 is always included (the reference of
    the parallel efficiency)."""
    return sorted({1, *_parse_int_list(text, "--ranks")})


def _scaling_checks(args: argparse.Namespace) -> None:
    """Refuse the options a scaling run does not combine with."""
    for option, given in (
        ("--peers", args.peers is not None),
        ("--in-process", args.in_process),
        ("--append", args.append),
    ):
        if given:
            raise XpnetError(
                f"--ranks does not combine with {option}: a scaling run times "
                "xpnet alone, each rank count in an mpiexec job of its own"
            )
    if args.device not in (None, "cpu"):
        raise XpnetError(
            f"--ranks runs on the CPU only, got --device {args.device}: "
            "use --device cpu or leave it out"
        )


def plan_from_args(args: argparse.Namespace) -> Plan:
    """Validate the parsed options into a :class:`Plan` (XpnetError when bad)."""
    ranks = parse_ranks(args.ranks) if getattr(args, "ranks", None) else []
    if ranks:
        _scaling_checks(args)
    overlap = bool(getattr(args, "overlap", False))
    if overlap and not ranks:
        raise XpnetError(
            "--overlap is a set-up of the scaling run: give it with --ranks, "
            "e.g. --ranks 1,2 --overlap"
        )
    default_models = ",".join(SCALING_BATCH_SIZES if ranks else MODELS)
    models = parse_models(default_models if args.models is None else args.models)
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
    if ranks and not args.batch_sizes and not args.quick:
        batch_sizes.update(
            (m, list(SCALING_BATCH_SIZES[m]))
            for m in models
            if m in SCALING_BATCH_SIZES
        )
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
    if not args.quiet_wait >= 0:
        raise XpnetError(f"--quiet-wait must be >= 0 seconds, got {args.quiet_wait}")
    if args.max_retries < 0:
        raise XpnetError(f"--max-retries must be >= 0, got {args.max_retries}")
    if args.warmup < 0:
        raise XpnetError(f"--warmup must be >= 0, got {args.warmup}")
    if args.gemm_size is not None and args.gemm_size < 16:
        raise XpnetError(f"--gemm-size must be >= 16, got {args.gemm_size}")
    if getattr(args, "native_blas", False) and args.in_process:
        raise XpnetError(
            "--native-blas drops kernel-forcing variables from the timed worker "
            "processes, and --in-process has none (a loaded BLAS keeps its "
            "kernel): drop --in-process"
        )
    device_notes: list[str] = []
    device = args.device if args.device is not None else "all"
    devices = parse_devices("cpu" if ranks else device, device_notes)
    gemm_size = {d: args.gemm_size or (2048 if d == "cpu" else 8192) for d in devices}
    return Plan(
        devices=devices,
        models=models,
        batch_sizes=batch_sizes,
        rows=rows,
        repeats=repeats,
        warmup=args.warmup,
        peers=[]
        if ranks
        else parse_peers(",".join(DEFAULT_PEERS) if args.peers is None else args.peers),
        synthetic=bool(args.synthetic),
        quick=bool(args.quick),
        gemm_size=gemm_size,
        lr=LR,
        note=args.note or "",
        device_notes=device_notes,
        isolate=not args.in_process,
        append=bool(args.append),
        max_retries=args.max_retries,
        settle_s=SETTLE_S,
        quiet_wait_s=args.quiet_wait,
        ranks=ranks,
        overlap=overlap,
        native_blas=bool(getattr(args, "native_blas", False)),
    )
