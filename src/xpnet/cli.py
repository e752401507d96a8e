"""The ``xpnet`` command: train, evaluate, predict, info, bench.

Exit codes: 0 success; 2 bad usage or input (one line on stderr); 1 anything
else (a diverging run, Ctrl-C, an unexpected failure).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .backend import (
    BACKENDS,
    Backend,
    available_backends,
    gpu_facts,
    gpu_name,
    resolve,
)
from .errors import DivergenceError, XpnetError

DEFAULT_LR = {"sgd": 0.1, "adam": 0.001, "adamw": 0.001}
LOSS_CHOICES = ("cross-entropy", "mse", "bce")
ACTIVATION_CHOICES = (
    "relu",
    "leaky-relu",
    "sigmoid",
    "tanh",
    "gelu",
    "elu",
    "softplus",
    "silu",
)


class UsageError(XpnetError):
    """A bad combination of command-line options."""


class CheckpointWriteError(XpnetError):
    """The checkpoint could not be written (read-only disk, disk full, ...)."""


class _Exit(Exception):
    """Leave a command with this exit code; its message was already printed."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors instead of the whole usage block."""

    #: the subcommand parsers by name (set on the top-level parser)
    commands: dict[str, argparse.ArgumentParser]

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# -- argument parsing -----------------------------------------------------------
def _hidden_sizes(text: str) -> list[int]:
    if text.strip() in ("", "none"):
        return []
    try:
        sizes = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated layer widths such as 512,512, got {text!r}"
        ) from None
    if any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError(f"layer widths must be positive, got {text!r}")
    return sizes


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(
            f"expected a non-negative integer, got {text!r}"
        )
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(
            f"expected a non-negative number, got {text!r}"
        )
    return value


def _add_device_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device",
        default="auto",
        help="auto (CUDA if CuPy and a GPU work, else CPU), cpu, cuda or cuda:N "
        "(default: auto)",
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default=None,
        help="array library; default numpy on cpu, cupy on cuda",
    )


def _add_data_options(parser: argparse.ArgumentParser, default: str | None) -> None:
    parser.add_argument(
        "--dataset",
        default=default,
        metavar="NAME|PATH.npz",
        help="mnist, fashion-mnist, mnist-sample (bundled, offline) or an .npz with "
        "x_train, y_train, x_test, y_test"
        + (
            f" (default: {default})"
            if default
            else " (default: the checkpoint's dataset)"
        ),
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        metavar="DIR",
        help="dataset cache directory (default: $XPNET_DATA, else the user cache "
        "dir, e.g. ~/.cache/xpnet)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="xpnet",
        description="Train multilayer perceptrons on NumPy (CPU) or CuPy (CUDA) "
        "with one Array-API code path.",
    )
    parser.add_argument("--version", action="version", version=f"xpnet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    parser.commands = sub.choices  # filled in as the commands are added

    train = sub.add_parser(
        "train",
        help="train an MLP (default: MNIST)",
        description="Train an MLP with softmax cross-entropy "
        "(by default) and report per-epoch loss, accuracy and "
        "throughput.",
    )
    _add_device_options(train)
    _add_data_options(train, "mnist")
    train.add_argument(
        "--hidden",
        type=_hidden_sizes,
        default=[256],
        metavar="N,N,...",
        help="hidden layer widths (default: 256)",
    )
    train.add_argument(
        "--activation",
        choices=ACTIVATION_CHOICES,
        default="relu",
        help="hidden-layer activation (default: relu)",
    )
    train.add_argument(
        "--loss",
        choices=LOSS_CHOICES,
        default="cross-entropy",
        help="cross-entropy (softmax fused), mse or bce (sigmoid "
        "fused), all on the last layer's logits (default: "
        "cross-entropy)",
    )
    train.add_argument(
        "--optimizer", choices=tuple(DEFAULT_LR), default="sgd", help="default: sgd"
    )
    train.add_argument(
        "--lr",
        type=_non_negative_float,
        default=None,
        help="learning rate (default: 0.1 for sgd, 0.06 for sgd with "
        "--standardize, 0.001 for adam and adamw)",
    )
    train.add_argument(
        "--momentum",
        type=_non_negative_float,
        default=0.9,
        help="SGD momentum (default: 0.9)",
    )
    train.add_argument("--nesterov", action="store_true", help="Nesterov momentum")
    train.add_argument(
        "--weight-decay",
        type=_non_negative_float,
        default=None,
        help="L2 (sgd, adam) or decoupled (adamw) weight decay on "
        "weights (default: 0; adamw: 0.01)",
    )
    train.add_argument(
        "--lr-decay",
        type=_non_negative_float,
        default=0.0,
        help="inverse-time decay per update: lr / (1 + decay * step) "
        "(default: 0, constant)",
    )
    train.add_argument(
        "--batch-size", type=_positive_int, default=64, help="default: 64"
    )
    train.add_argument(
        "--epochs",
        type=_positive_int,
        default=10,
        help="total epochs to train; a resumed run stops there too, so re-running "
        "the same command finishes the job (default: 10)",
    )
    train.add_argument(
        "--seed",
        type=_non_negative_int,
        default=0,
        help="seed of the weights and shuffling (default: 0)",
    )
    train.add_argument(
        "--dtype",
        choices=("float32", "float64"),
        default="float32",
        help="default: float32",
    )
    train.add_argument(
        "--deskew",
        action="store_true",
        help="deskew images by their moments before training",
    )
    train.add_argument(
        "--no-scale",
        action="store_true",
        help="keep feature values as they are (default: pixels "
        "0-255 are scaled to [0, 1])",
    )
    train.add_argument(
        "--standardize",
        action="store_true",
        help="standardise features with the training set's mean/std",
    )
    train.add_argument(
        "--save",
        metavar="PATH.npz",
        default=None,
        help="checkpoint file, rewritten atomically at the start and after every "
        "epoch, so Ctrl-C keeps the last completed epoch; an existing file is "
        "never replaced without --overwrite (default with --resume: the resumed "
        "file)",
    )
    train.add_argument(
        "--resume",
        metavar="PATH.npz",
        default=None,
        help="continue a saved run (its model, optimizer, data options and RNG) "
        "up to --epochs in total, saving to the same file unless --save names "
        "another",
    )
    train.add_argument(
        "--resume-if-exists",
        action="store_true",
        help="continue --save's checkpoint if it exists, else start it: one "
        "command that survives being killed and re-run",
    )
    train.add_argument(
        "--overwrite",
        action="store_true",
        help="allow --save to replace an existing file that is not the run's own "
        "checkpoint",
    )
    train.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object (config, device, history) as "
        "the last line of stdout",
    )
    train.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bar and no per-epoch lines (the final line stays)",
    )
    train.set_defaults(func=cmd_train)

    evaluate = sub.add_parser("evaluate", help="test accuracy of a checkpoint")
    evaluate.add_argument("model", metavar="MODEL", help="checkpoint .npz")
    _add_data_options(evaluate, None)
    _add_device_options(evaluate)
    evaluate.add_argument(
        "--json", action="store_true", help="print the result as one JSON object"
    )
    evaluate.set_defaults(func=cmd_evaluate)

    predict = sub.add_parser(
        "predict",
        help="classify images",
        description="Classify inputs: an image file (PNG/JPEG/PGM, read with Pillow), "
        "a .npy array (one 28x28 image, a flat vector, or a batch), or "
        "DATASET:INDEX for a test-set image (e.g. mnist-sample:7).",
    )
    predict.add_argument("model", metavar="MODEL", help="checkpoint .npz")
    predict.add_argument("inputs", metavar="INPUT", nargs="+")
    predict.add_argument(
        "--data-dir",
        default=None,
        metavar="DIR",
        help="dataset cache directory for DATASET:INDEX inputs",
    )
    _add_device_options(predict)
    predict.add_argument(
        "--json", action="store_true", help="print the results as one JSON object"
    )
    predict.set_defaults(func=cmd_predict)

    info = sub.add_parser("info", help="backends, devices, GPU, versions")
    info.add_argument("--json", action="store_true")
    info.set_defaults(func=cmd_info)

    from .bench.cli import add_bench_parser

    add_bench_parser(sub)
    return parser


# -- helpers --------------------------------------------------------------------
def _say(args: argparse.Namespace, text: str) -> None:
    if not getattr(args, "quiet", False):
        print(text, flush=True)


def _load_data(
    name: str,
    data_dir: str | None,
    *,
    deskew: bool,
    standardize: bool,
    dtype: str,
    scale: bool = True,
    preprocessing_arrays: dict[str, Any] | None = None,
):
    """The dataset, preprocessed; reuses saved standardisation stats if given."""
    from .datasets import load_dataset
    from .preprocessing import preprocess, transform

    raw = load_dataset(name, data_dir, progress=sys.stderr.isatty())
    data = preprocess(
        raw,
        deskew=deskew,
        scale=scale,
        standardize=standardize and not preprocessing_arrays,
        dtype=dtype,
    )
    if standardize and preprocessing_arrays:
        mean, std = preprocessing_arrays["mean"], preprocessing_arrays["std"]
        data.x_train = transform(data.x_train, mean=mean, std=std, dtype=dtype)
        data.x_test = transform(data.x_test, mean=mean, std=std, dtype=dtype)
        data.preprocessing.update(mean=mean, std=std)
    return data


def _dataset_facts(data) -> dict[str, Any]:
    return {
        "name": data.name,
        "source": data.source,
        "n_train": int(len(data.x_train)),
        "n_test": int(len(data.x_test)),
        "n_features": data.n_features,
        "num_classes": int(data.num_classes),
        "image_shape": list(data.image_shape) if data.image_shape else None,
        "class_names": list(data.class_names) if data.class_names else None,
    }


def _device_facts(backend: Backend) -> dict[str, Any]:
    return {
        "backend": backend.name,
        "device": backend.device_name,
        "gpu": gpu_name(backend) or None,
    }


def _check_features(model, data, where: str) -> None:
    if data.n_features != model.in_features:
        raise UsageError(
            f"{where} expects {model.in_features} features but dataset "
            f"{data.name!r} has {data.n_features}: use the dataset it was trained on"
        )


# -- train ----------------------------------------------------------------------
# Options a resumed run must share with its checkpoint: they define the model
# (architecture, dtype) or its data. Any other option that differs is refused
# too (the optimizer state and RNG continue), except the batch size, honoured.
_ARCHITECTURE_OPTIONS = ("hidden", "activation", "loss", "dtype")
_DATA_OPTIONS = ("dataset", "deskew", "standardize", "no_scale")
_CONTINUED_OPTIONS = (
    "optimizer",
    "lr",
    "momentum",
    "nesterov",
    "weight_decay",
    "lr_decay",
    "seed",
)
_TRAIN_OPTIONS = (
    "dataset",
    "hidden",
    "activation",
    "loss",
    "optimizer",
    "lr",
    "momentum",
    "nesterov",
    "weight_decay",
    "lr_decay",
    "batch_size",
    "seed",
    "dtype",
    "deskew",
    "standardize",
    "no_scale",
)


def _build_model(args: argparse.Namespace, data, backend: Backend):
    from .model import mlp
    from .optimizers import get_optimizer
    from .schedules import Constant, InverseTimeDecay

    lr = args.lr if args.lr is not None else DEFAULT_LR[args.optimizer]
    if args.lr is None and args.optimizer == "sgd" and args.standardize:
        # Standardised MNIST inputs have 4x the mean square norm of pixels in
        # [0, 1]; at 0.1 with momentum 0.9 SGD's steps then grow the loss without
        # bound. 0.06 did best on a validation split of the sample (0.04-0.07).
        lr = 0.06
    schedule = InverseTimeDecay(lr, args.lr_decay) if args.lr_decay else Constant(lr)
    decay = {} if args.weight_decay is None else {"weight_decay": args.weight_decay}
    if args.optimizer == "sgd":
        optimizer = get_optimizer(
            "sgd", lr=schedule, momentum=args.momentum, nesterov=args.nesterov, **decay
        )
    else:
        optimizer = get_optimizer(args.optimizer, lr=schedule, **decay)
    # Record what was used, defaults included.
    args.lr, args.weight_decay = lr, optimizer.weight_decay
    outputs = data.num_classes if args.loss != "bce" or data.num_classes > 2 else 1
    sizes = [data.n_features, *args.hidden, outputs]
    return mlp(
        sizes,
        args.activation,
        loss=args.loss,
        optimizer=optimizer,
        device=backend,
        dtype=args.dtype,
        seed=args.seed,
    )


def _epoch_line(record: dict[str, Any], total: int) -> str:
    acc = record.get("accuracy")
    test = record.get("val_accuracy")
    parts = [f"epoch {record['epoch']:>3}/{total}", f"loss {record['loss']:.4f}"]
    if acc is not None:
        parts.append(f"train acc {100 * acc:6.2f}%")
    if test is not None:
        parts.append(f"test acc {100 * test:6.2f}%")
    parts.append(f"{record['seconds']:6.2f} s")
    parts.append(f"{record['samples_per_second']:>9,.0f} samples/s")
    return "  ".join(parts)


def _looks_like_path(name: str) -> bool:
    from .datasets import DATASET_NAMES

    return name.strip().lower() not in DATASET_NAMES and (
        name.endswith(".npz") or Path(name).exists()
    )


def _dataset_identity(name: str) -> str:
    """A dataset name as stored: BYO files resolved, so resuming works anywhere."""
    return str(Path(name).resolve()) if _looks_like_path(name) else name


def _same_dataset(a: str, b: str) -> bool:
    if _looks_like_path(a) or _looks_like_path(b):
        return Path(a).resolve() == Path(b).resolve()
    return a.strip().lower() == b.strip().lower()


def _same_option(key: str, given: Any, saved: Any) -> bool:
    if key == "dataset":
        return _same_dataset(str(given), str(saved))
    if isinstance(given, float) or isinstance(saved, float):
        return saved is not None and given is not None and float(given) == saved
    if isinstance(given, list | tuple):
        return list(given) == list(saved or [])
    return bool(given == saved)


def _flag(key: str, value: Any) -> str:
    name = "--" + key.replace("_", "-")
    if isinstance(value, bool):
        return name if value else f"no {name}"
    if isinstance(value, list):
        value = ",".join(map(str, value)) or "none"
    return f"{name} {value}"


def _reconcile_resume(
    args: argparse.Namespace, saved: dict[str, Any], where: str
) -> list[str]:
    """Take the checkpoint's options; refuse given ones that contradict them.

    Returns notices about options that are honoured although they differ.
    """
    notices = []
    for key in _TRAIN_OPTIONS:
        if key not in saved:
            continue
        if key in args.given and not _same_option(key, getattr(args, key), saved[key]):
            given, old = _flag(key, getattr(args, key)), _flag(key, saved[key])
            if key == "batch_size":
                notices.append(
                    f"batch size {saved[key]} -> {args.batch_size} from this epoch on "
                    "(the checkpoint will record the new one)"
                )
                continue
            if key == "dataset" and _looks_like_path(saved[key]):
                if not Path(saved[key]).exists():
                    # The data moved since it was trained on: follow it.
                    notices.append(f"dataset {saved[key]} not found; using {given}")
                    continue
            if key in _ARCHITECTURE_OPTIONS or key in _DATA_OPTIONS:
                why = "a resumed run keeps the model and data it was trained on"
            else:
                why = "a resumed run continues its optimizer and random state"
            raise UsageError(
                f"{given} contradicts checkpoint {where!r} ({old}): {why}; drop the "
                "option, or start a new run without --resume"
            )
        setattr(args, key, saved[key])
    return notices


class _SaveTarget:
    """Where this run writes its checkpoint, checked before any work is done."""

    def __init__(self, args: argparse.Namespace, resume: str | None) -> None:
        self.path = Path(args.save) if args.save else None
        self.epoch: int | None = None  # the epoch the file on disk holds
        if self.path is None:
            return
        path = self.path
        if path.suffix != ".npz":
            raise UsageError(
                f"--save {str(path)!r}: a checkpoint path must end in .npz"
            )
        if path.is_dir():
            raise UsageError(
                f"--save {str(path)!r} is a directory: give a file name such as "
                f"{str(path / 'run.npz')!r}"
            )
        parent = next((p for p in path.parents if p.exists()), Path("."))
        if not parent.is_dir():
            raise UsageError(
                f"--save {str(path)!r}: {str(parent)!r} is a file, not a directory"
            )
        dataset = getattr(args, "dataset", None)
        if dataset and _looks_like_path(dataset) and _same_dataset(dataset, str(path)):
            raise UsageError(
                f"--save {str(path)!r} is the training data file: save the "
                "checkpoint under another name"
            )
        own = resume is not None and Path(resume).resolve() == path.resolve()
        if path.exists() and not own and not args.overwrite:
            raise UsageError(
                f"--save {str(path)!r} already exists: continue it with --resume "
                f"{str(path)!r} (or --resume-if-exists), or replace it with --overwrite"
            )
        if own:
            self.epoch = None  # set once the checkpoint is read

    def holds(self) -> str:
        if self.path is None:
            return "nothing was saved (use --save PATH.npz to keep checkpoints)"
        if self.epoch is None:
            return f"{self.path} was not written"
        return f"{self.path} holds epoch {self.epoch}"


def _resume_source(args: argparse.Namespace) -> str | None:
    """The checkpoint to resume from, after --resume/--resume-if-exists/--save."""
    if args.resume_if_exists:
        if not args.save:
            raise UsageError(
                "--resume-if-exists needs --save PATH.npz (the checkpoint to continue)"
            )
        if args.resume:
            raise UsageError(
                "--resume-if-exists continues --save's file: drop --resume, or drop "
                "--resume-if-exists"
            )
        return args.save if Path(args.save).exists() else None
    if args.resume and not args.save:
        # Resuming keeps saving to the checkpoint it continues.
        args.save = args.resume
    return args.resume


def cmd_train(args: argparse.Namespace) -> int:
    from .checkpoint import load_checkpoint, save_checkpoint
    from .interrupts import Terminated, deferred
    from .runlock import CheckpointLock, remove_stale_temp_files

    resume = _resume_source(args)
    target = _SaveTarget(args, resume)
    backend = resolve(args.device, args.backend)
    lock = CheckpointLock(target.path) if target.path else None
    if lock is not None:
        lock.acquire()
        args.cleanup.append(lock.release)
        remove_stale_temp_files(target.path)
    meta: dict[str, Any] = {}
    notices: list[str] = []
    if resume:
        model, meta = load_checkpoint(resume, backend)
        if target.path is not None and Path(resume).resolve() == target.path.resolve():
            target.epoch = model.epochs_trained
        notices = _reconcile_resume(args, meta.get("train_options", {}), resume)
        args.dtype = model.dtype_name
        if args.epochs <= model.epochs_trained:
            return _nothing_to_train(args, model, meta, resume, backend)
    args.dataset = _dataset_identity(args.dataset)
    data = _load_data(
        args.dataset,
        args.data_dir,
        deskew=args.deskew,
        standardize=args.standardize,
        scale=not args.no_scale,
        dtype=args.dtype,
        preprocessing_arrays=meta.get("preprocessing_arrays") or None,
    )
    if resume:
        _check_features(model, data, f"checkpoint {resume!r}")
    else:
        model = _build_model(args, data, backend)
    history_so_far = list(meta.get("history", []))
    train_options = {k: getattr(args, k) for k in _TRAIN_OPTIONS}
    total_epochs = args.epochs
    args.report.update(
        config=train_options, device=_device_facts(backend), checkpoint=args.save
    )
    _say(
        args,
        f"xpnet {__version__} | {backend.describe()} | dtype {model.dtype_name}"
        f" | seed {model.seed}",
    )
    _say(
        args,
        f"data: {data.name} ({data.source}): {len(data.x_train):,} train / "
        f"{len(data.x_test):,} test, {data.n_features} features, "
        f"{data.num_classes} classes"
        + (", deskewed" if args.deskew else "")
        + (", standardised" if args.standardize else ""),
    )
    sizes = [model.in_features] + [
        layer.out_features for layer in model.layers if hasattr(layer, "out_features")
    ]
    activation = next(
        (type(layer).__name__ for layer in model.layers if not layer.params), "linear"
    )
    _say(
        args,
        f"model: {'-'.join(map(str, sizes))} {activation}"
        f" | loss {type(model.loss).__name__} | {model.optimizer!r}"
        f" | batch {args.batch_size} | epochs {total_epochs}"
        + (f" | resumed at epoch {model.epochs_trained}" if resume else ""),
    )
    for notice in notices:
        print(f"xpnet: {notice}", file=sys.stderr)

    prep = data.preprocessing

    def checkpoint() -> None:
        if target.path is None:
            return
        extra = {
            "dataset": _dataset_facts(data),
            "train_options": train_options,
            "preprocessing": {
                "deskew": bool(prep.get("deskew")),
                "scale": prep.get("scale"),
                "standardize": prep.get("mean") is not None,
            },
            "history": history_so_far,
        }
        # A signal waits for the save to finish, so the message that follows
        # it names the epoch that is really on disk.
        with deferred():
            try:
                save_checkpoint(
                    target.path,
                    model,
                    extra,
                    {"mean": prep.get("mean"), "std": prep.get("std")},
                )
            except OSError as exc:
                raise CheckpointWriteError(
                    f"cannot write {str(target.path)!r} ({exc.strerror or exc}); "
                    + target.holds()
                ) from None
            target.epoch = model.epochs_trained

    records: list[dict[str, Any]] = []
    args.report["history"] = records
    bar = None
    show_bar = not args.quiet and not args.json

    def bar_open() -> None:
        nonlocal bar
        if show_bar:
            from tqdm import tqdm

            bar = tqdm(
                total=len(data.x_train),
                unit="sample",
                unit_scale=True,
                leave=False,
                file=sys.stderr,
                dynamic_ncols=True,
                desc=f"epoch {model.epochs_trained + 1}",
                disable=None,
            )

    def bar_close() -> None:
        nonlocal bar
        if bar is not None:
            bar.close()
            bar = None

    def on_batch(samples_done: int) -> None:
        if bar is not None:
            bar.update(samples_done - bar.n)

    def on_epoch_end(record: dict[str, Any]) -> None:
        row = _history_row(record)
        records.append(row)
        history_so_far.append(row)
        args.report["epochs_trained"] = model.epochs_trained
        bar_close()
        checkpoint()
        _say(args, _epoch_line(record, total_epochs))
        if model.epochs_trained < total_epochs:
            bar_open()

    # The starting state first: from here on the file always holds the last
    # completed epoch, whatever interrupts the run.
    checkpoint()
    x_train = model.to_device(data.x_train, model.dtype_name)
    x_test = model.to_device(data.x_test, model.dtype_name)
    started = time.perf_counter()
    bar_open()
    try:
        # Overflow inside a diverging epoch is reported once, by fit, as a
        # DivergenceError; NumPy's per-operation warnings would only bury it.
        with np.errstate(over="ignore", invalid="ignore", under="ignore"):
            model.fit(
                x_train,
                data.y_train,
                epochs=total_epochs - model.epochs_trained,
                batch_size=args.batch_size,
                validation_data=(x_test, data.y_test),
                on_batch=on_batch if show_bar else None,
                on_epoch_end=on_epoch_end,
            )
    except (KeyboardInterrupt, Terminated) as exc:
        bar_close()
        # The unfinished epoch is dropped, so --resume continues exactly.
        how = str(exc) if isinstance(exc, Terminated) else "interrupted"
        hint = (
            f" (continue with: xpnet train --resume {target.path} "
            f"--epochs {total_epochs})"
            if target.epoch is not None
            else ""
        )
        message = f"{how} in epoch {model.epochs_trained + 1}; {target.holds()}{hint}"
        args.report["error"] = message
        print(f"\nxpnet: {message}", file=sys.stderr)
        raise _Exit(
            Terminated.exit_code if isinstance(exc, Terminated) else 1
        ) from None
    except DivergenceError as exc:
        raise DivergenceError(f"{exc}; {target.holds()}") from None
    finally:
        bar_close()
    total = time.perf_counter() - started
    if target.path is not None:
        _say(args, f"saved {target.path}")
    final = records[-1] if records else {}
    print(
        f"done: {len(records)} epoch{'s' * (len(records) != 1)} in {total:.1f} s"
        + (
            f", test accuracy {100 * final['test_accuracy']:.2f}%"
            if final.get("test_accuracy") is not None
            else ""
        ),
        flush=True,
    )
    if args.json:
        _print_json(
            {
                "command": "train",
                "xpnet_version": __version__,
                "config": train_options,
                "device": _device_facts(backend),
                "dataset": _dataset_facts(data),
                "epochs_trained": model.epochs_trained,
                "history": records,
                "seconds": total,
                "checkpoint": args.save,
            }
        )
    return 0


def _nothing_to_train(args, model, meta, resume: str, backend: Backend) -> int:
    """``--epochs`` counts the total: a finished run says so and exits 0."""
    done = model.epochs_trained
    print(
        f"xpnet: {resume} already holds {done} epoch{'s' * (done != 1)} "
        f"(--epochs {args.epochs} is the total): nothing to train",
        file=sys.stderr,
    )
    history = meta.get("history", [])
    test_accuracy = history[-1].get("test_accuracy") if history else None
    print(
        f"done: 0 epochs, {done} trained"
        + (
            f", test accuracy {100 * test_accuracy:.2f}%"
            if isinstance(test_accuracy, float)
            else ""
        ),
        flush=True,
    )
    if args.json:
        _print_json(
            {
                "command": "train",
                "xpnet_version": __version__,
                "config": meta.get("train_options", {}),
                "device": _device_facts(backend),
                "dataset": meta.get("dataset"),
                "epochs_trained": done,
                "history": [],
                "seconds": 0.0,
                "checkpoint": args.save,
            }
        )
    return 0


def _history_row(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "epoch": record["epoch"],
        "loss": record["loss"],
        "train_accuracy": record.get("accuracy"),
        "test_loss": record.get("val_loss"),
        "test_accuracy": record.get("val_accuracy"),
        "seconds": record["seconds"],
        "samples_per_second": record["samples_per_second"],
    }


# -- evaluate -------------------------------------------------------------------
def _load_for_inference(args: argparse.Namespace):
    from .checkpoint import load_checkpoint

    backend = resolve(args.device, args.backend)
    model, meta = load_checkpoint(args.model, backend)
    return model, meta, backend


def _data_for_checkpoint(meta: dict[str, Any], name: str | None, data_dir, dtype: str):
    options = meta.get("train_options", {})
    prep = meta.get("preprocessing", {})
    name = name or options.get("dataset") or meta.get("dataset", {}).get("name")
    if not name:
        raise UsageError("the checkpoint does not name its dataset: pass --dataset")
    return _load_data(
        name,
        data_dir,
        deskew=bool(prep.get("deskew")),
        standardize=bool(prep.get("standardize")),
        scale=prep.get("scale") is not None,
        dtype=dtype,
        preprocessing_arrays=meta.get("preprocessing_arrays") or None,
    )


def cmd_evaluate(args: argparse.Namespace) -> int:
    model, meta, backend = _load_for_inference(args)
    data = _data_for_checkpoint(meta, args.dataset, args.data_dir, model.dtype_name)
    _check_features(model, data, f"checkpoint {args.model!r}")
    start = time.perf_counter()
    result = model.evaluate(data.x_test, data.y_test)
    seconds = time.perf_counter() - start
    if args.json:
        _print_json(
            {
                "command": "evaluate",
                "model": args.model,
                "dataset": data.name,
                "samples": len(data.x_test),
                "device": _device_facts(backend),
                "seconds": seconds,
                **result,
            }
        )
    else:
        acc = result["accuracy"]
        print(
            f"{data.name} test set: "
            + (f"accuracy {100 * acc:.2f}%, " if acc is not None else "")
            + f"loss {result['loss']:.4f} ({len(data.x_test):,} samples, "
            f"{seconds:.2f} s, {backend.describe()})"
        )
    return 0


# -- predict --------------------------------------------------------------------
@functools.lru_cache(maxsize=4)
def _dataset_once(name: str, data_dir: str | None):
    """A dataset read once per process, however many inputs index into it."""
    from .datasets import load_dataset

    return load_dataset(name, data_dir)


_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".pgm", ".bmp", ".gif")


def _read_input(
    text: str, meta: dict[str, Any], data_dir, features: int
) -> tuple[np.ndarray, Any]:
    """One predict argument as ``(samples (n, features), true label or None)``.

    The samples keep the unit they came in (uint8 pixels from images and
    datasets, a .npy file's own dtype): :func:`_prepare_inputs` tells them apart.
    """
    path = Path(text)
    if (
        not path.exists()
        and ":" in text
        and not text.lower().endswith((".npy", *_IMAGE_SUFFIXES))
    ):
        name, _, index = text.rpartition(":")
        if not index.isdigit():
            raise UsageError(
                f"{text!r}: expected DATASET:INDEX with a number after "
                "the colon, e.g. mnist-sample:7"
            )
        data = _dataset_once(name, data_dir)
        i = int(index)
        if i >= len(data.x_test):
            raise UsageError(
                f"{text!r}: index {i} is past the end of the "
                f"{len(data.x_test):,}-image test set of {data.name}"
            )
        return data.x_test[i : i + 1], int(data.y_test[i])
    if not path.is_file():
        raise UsageError(f"input {text!r} is neither a file nor DATASET:INDEX")
    shape = tuple(meta.get("dataset", {}).get("image_shape") or (28, 28))
    if path.suffix.lower() != ".npy":
        return _read_image(path, shape).reshape(1, -1), None
    try:
        x = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise UsageError(f"{text!r} is not a readable .npy file ({exc})") from None
    if not isinstance(x, np.ndarray):  # np.load gives an NpzFile for a .npz
        x.close()
        raise UsageError(f"{text!r} is an .npz archive, not a .npy array")
    # One sample (h, w) or (features,), or a batch (n, h, w) or (n, features).
    if x.shape in (shape, (features,)):
        return x.reshape(1, -1), None
    if x.ndim in (2, 3) and x.shape[1:] in (shape, (features,)):
        return x.reshape(len(x), -1), None
    h, w = shape
    raise UsageError(
        f"{text!r} holds an array of shape {x.shape}; the model expects a {h}x{w} "
        f"image ({h}, {w}) or ({features},), or n of them: (n, {h}, {w}) or "
        f"(n, {features})"
    )


def _read_image(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """A greyscale image as MNIST stores digits: light strokes on black, ``(h, w)``
    uint8 0-255. Transparent parts are filled with the colour that contrasts with
    the strokes' (white behind dark strokes, black behind light ones)."""
    import warnings

    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise UsageError(
            f"reading {path.name} needs Pillow: pip install 'xpnet[images]' "
            "(or pass a .npy array)"
        ) from None
    try:
        with warnings.catch_warnings():
            # Pillow only warns below twice its pixel limit: refuse those too.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                grey_alpha = np.asarray(image.convert("LA"), dtype=np.float32)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        reason = str(exc).rstrip(".")
        raise UsageError(
            f"image {str(path)!r} is too large to read safely ({reason}): scale it "
            f"down, a digit needs only {shape[1]}x{shape[0]} pixels"
        ) from None
    except (
        UnidentifiedImageError,
        OSError,
        ValueError,
        SyntaxError,
        EOFError,
        MemoryError,
    ) as exc:
        raise UsageError(f"cannot read image {str(path)!r}: {exc}") from None
    grey, alpha = grey_alpha[..., 0], grey_alpha[..., 1] / 255
    coverage = float(alpha.sum())
    stroke = float((grey * alpha).sum()) / coverage if coverage else 0.0
    background = 255.0 if stroke < 128 else 0.0
    pixels = grey * alpha + background * (1 - alpha)
    resized = Image.fromarray(pixels, mode="F").resize(
        (shape[1], shape[0]), Image.Resampling.LANCZOS
    )
    pixels = np.clip(np.asarray(resized), 0, 255)
    # Photos and drawings are usually dark ink on a light page: invert them.
    if pixels.mean() > 127:
        pixels = 255 - pixels
    return np.rint(pixels).astype(np.uint8)


def _prepare_inputs(
    x: np.ndarray, meta: dict[str, Any], dtype: str, text: str
) -> np.ndarray:
    """Apply the checkpoint's preprocessing (deskew, scale, standardise) to ``x``.

    For a model trained on scaled pixels, ``x`` may hold raw pixels 0-255 or
    floats already in [0, 1] (see :func:`xpnet.preprocessing.transform`).
    """
    from .preprocessing import transform

    prep = meta.get("preprocessing", {})
    shape = meta.get("dataset", {}).get("image_shape")
    arrays = meta.get("preprocessing_arrays") or {}
    standardize = bool(prep.get("standardize")) and "mean" in arrays
    try:
        return transform(
            x,
            deskew=bool(prep.get("deskew") and shape),
            scale=prep.get("scale"),
            mean=arrays["mean"] if standardize else None,
            std=arrays["std"] if standardize else None,
            image_shape=tuple(shape) if shape else None,
            dtype=dtype,
        )
    except XpnetError as exc:
        raise UsageError(f"input {text!r}: {exc}") from None


def cmd_predict(args: argparse.Namespace) -> int:
    model, meta, backend = _load_for_inference(args)
    names = meta.get("dataset", {}).get("class_names")
    results = []
    for text in args.inputs:
        raw, truth = _read_input(text, meta, args.data_dir, model.in_features)
        if raw.shape[1] != model.in_features:  # a dataset with other features
            raise UsageError(
                f"input {text!r} has {raw.shape[1]} values per sample, "
                f"the model expects {model.in_features}"
            )
        x = _prepare_inputs(raw, meta, model.dtype_name, text)
        probs = model.predict_proba(x)
        for row_index, p in enumerate(probs):
            label = int(np.argmax(p)) if len(p) > 1 else int(p[0] > 0.5)
            confidence = (
                float(p[label]) if len(p) > 1 else float(p[0] if label else 1 - p[0])
            )
            name = names[label] if names and label < len(names) else str(label)
            item = {
                "input": text if len(probs) == 1 else f"{text}[{row_index}]",
                "prediction": label,
                "class_name": name,
                "probability": confidence,
                "probabilities": [round(float(v), 6) for v in p],
                "true_label": truth,
            }
            results.append(item)
            if not args.json:
                article = "an" if name[:1].lower() in "aeiou8" else "a"
                verdict = (
                    f"{item['input']}: looks like {article} {name}, p={confidence:.2f}"
                )
                if truth is not None:
                    verdict += f" (true label: {names[truth] if names else truth})"
                print(verdict)
                print(
                    "  "
                    + "  ".join(
                        f"{names[k] if names else k}: {v:.3f}" for k, v in enumerate(p)
                    )
                )
    if args.json:
        _print_json(
            {
                "command": "predict",
                "model": args.model,
                "device": _device_facts(backend),
                "results": results,
            }
        )
    return 0


# -- info -----------------------------------------------------------------------
def cmd_info(args: argparse.Namespace) -> int:
    import array_api_compat

    from .datasets import default_data_dir

    auto = resolve("auto")
    facts = {
        "xpnet": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "array_api_compat": array_api_compat.__version__,
        "backends": available_backends(),
        "gpus": gpu_facts(),
        "auto_device": _device_facts(auto),
        "data_dir": str(default_data_dir()),
    }
    if args.json:
        _print_json(facts)
        return 0
    print(
        f"xpnet {facts['xpnet']} on Python {facts['python']} "
        f"({facts['platform']}, {facts['cpu_count']} CPUs)"
    )
    print(f"array-api-compat {facts['array_api_compat']}")
    for name, version in facts["backends"].items():
        print(f"  {name:<17} {version}")
    if facts["gpus"]:
        for gpu in facts["gpus"]:
            print("  GPU " + ", ".join(f"{k}={v}" for k, v in gpu.items()))
    else:
        print(
            "  GPU: none usable (CuPy missing or no CUDA device); "
            "pip install 'xpnet[cuda12]' on a CUDA machine"
        )
    print(f"--device auto -> {auto.describe()}")
    print(f"dataset cache: {facts['data_dir']}")
    return 0


# -- entry point ----------------------------------------------------------------
def _finite_or_none(value: Any) -> Any:
    """``value`` with every NaN/inf float replaced by None (strict JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_none(v) for v in value]
    if isinstance(value, np.generic):
        return _finite_or_none(value.item())
    return value


def _print_json(record: dict[str, Any]) -> None:
    """One line of strict JSON (no NaN/Infinity tokens) on stdout."""
    print(json.dumps(_finite_or_none(record), allow_nan=False), flush=True)


def _given_options(
    parser: argparse.ArgumentParser, argv: list[str], parsed: argparse.Namespace
) -> set[str]:
    """The destinations of the options that ``argv`` sets explicitly.

    argparse fills in a default only where the namespace lacks the attribute,
    so parsing into a namespace pre-filled with a marker leaves exactly the
    options the user typed changed.
    """
    marker = object()
    probe = argparse.Namespace(**{key: marker for key in vars(parsed)})
    parser.parse_known_args(argv, namespace=probe)
    return {key for key, value in vars(probe).items() if value is not marker}


def _fail(args: argparse.Namespace, message: str, code: int) -> int:
    print(f"xpnet: error: {message}", file=sys.stderr)
    if getattr(args, "json", False):
        _print_json(
            {
                "command": args.command,
                "xpnet_version": __version__,
                **args.report,
                "error": message,
                "exit_code": code,
            }
        )
    return code


def main(argv: list[str] | None = None) -> int:
    from .interrupts import Terminated, install

    restore_signals = install()
    # Notices from the library (e.g. the auto device's fallback) as one line each.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("xpnet: %(message)s"))
    logger = logging.getLogger("xpnet")
    saved_logging = logger.handlers, logger.propagate
    logger.handlers = [handler]
    logger.propagate = False

    def restore_logging() -> None:
        logger.handlers, logger.propagate = saved_logging

    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:
        parser.print_help()
        restore_signals()
        restore_logging()
        return 0
    try:
        args = parser.parse_args(argv)
    except SystemExit:
        restore_signals()
        restore_logging()
        raise
    rest = argv[argv.index(args.command) + 1 :]
    args.given = _given_options(parser.commands[args.command], rest, args)
    args.report = {}
    args.cleanup = [restore_signals, restore_logging]
    try:
        return int(args.func(args) or 0)
    except _Exit as exc:
        if getattr(args, "json", False):
            _print_json(
                {
                    "command": args.command,
                    **args.report,
                    "exit_code": exc.code,
                }
            )
        return exc.code
    except DivergenceError as exc:
        return _fail(args, str(exc), 1)
    except XpnetError as exc:
        return _fail(args, str(exc), 2)
    except KeyboardInterrupt:
        print("\nxpnet: interrupted", file=sys.stderr)
        return 1
    except Terminated as exc:
        print(f"\nxpnet: {exc}", file=sys.stderr)
        return Terminated.exit_code
    except BrokenPipeError:
        return 1
    except Exception as exc:  # the last resort: one line, details on request
        if os.environ.get("XPNET_DEBUG"):
            raise
        return _fail(
            args,
            f"unexpected error: {type(exc).__name__}: {exc} "
            "(set XPNET_DEBUG=1 for the traceback)",
            1,
        )
    finally:
        for release in reversed(args.cleanup):
            release()


if __name__ == "__main__":
    sys.exit(main())
