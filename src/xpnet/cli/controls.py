"""``xpnet train``'s training controls: the learning-rate schedule (with a
warm-up), early stopping, the best checkpoint, logs and TensorBoard.

Defined once here: :func:`add_control_options` puts them on the parser,
:data:`CONTROL_OPTIONS` lists those a checkpoint records (a resumed run
continues them and refuses contradicting ones, see :mod:`.resume`),
:func:`check_controls` refuses combinations that cannot work before any work
is done, and :func:`build_schedule` / :func:`control_callbacks` turn them
into the library's :mod:`xpnet.schedules` and :mod:`xpnet.callbacks`.
Schedules are given in epochs and become update counts with the run's
updates per epoch.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

#: ``--schedule`` choices; plateau is a constant rate lowered by
#: :class:`xpnet.callbacks.ReduceLROnPlateau`
SCHEDULE_CHOICES = (
    "constant",
    "inverse-time",
    "step",
    "exponential",
    "cosine",
    "plateau",
)

#: what each schedule parameter defaults to
DEFAULTS: dict[str, Any] = {
    "lr_decay": 0.001,  # inverse-time, per update
    "step_epochs": 10,
    "step_gamma": 0.1,
    "decay_rate": 0.9,  # exponential, per epoch
    "min_lr": 0.0,  # cosine's floor, plateau's least rate
    "plateau_patience": 5,
    "plateau_factor": 0.1,
}

#: the options of a schedule (beyond --warmup-epochs and --min-lr's floor)
SCHEDULE_PARAMETERS = {
    "constant": (),
    "inverse-time": ("lr_decay",),
    "step": ("step_epochs", "step_gamma"),
    "exponential": ("decay_rate",),
    "cosine": ("min_lr",),
    "plateau": ("plateau_patience", "plateau_factor", "min_lr"),
}

#: recorded in checkpoints: a resumed run continues them
CONTROL_OPTIONS = (
    "schedule",
    "warmup_epochs",
    "step_epochs",
    "step_gamma",
    "decay_rate",
    "min_lr",
    "plateau_patience",
    "plateau_factor",
    "early_stopping",
    "adam_betas",
)

#: what checkpoints written before these options existed were trained with
OLD_DEFAULTS: dict[str, Any] = {
    "warmup_epochs": 0,
    "early_stopping": None,
    "adam_betas": None,
    **{k: None for k in ("step_epochs", "step_gamma", "decay_rate", "min_lr")},
    **{k: None for k in ("plateau_patience", "plateau_factor")},
}

#: the JSON types each recorded control may have (checkpoint validation)
SAVED_TYPES: dict[str, tuple[type, ...]] = {
    "schedule": (str,),
    "warmup_epochs": (int,),
    "step_epochs": (int, type(None)),
    "step_gamma": (int, float, type(None)),
    "decay_rate": (int, float, type(None)),
    "min_lr": (int, float, type(None)),
    "plateau_patience": (int, type(None)),
    "plateau_factor": (int, float, type(None)),
    "early_stopping": (int, type(None)),
    "adam_betas": (list, type(None)),
}


def _betas(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 2 or not all(0 <= v < 1 for v in values):
        raise argparse.ArgumentTypeError(
            f"expected two numbers in [0, 1) such as 0.9,0.999, got {text!r}"
        )
    return values


def add_control_options(train: argparse.ArgumentParser, types: dict[str, Any]) -> None:
    """The controls' flags on ``xpnet train``'s parser; ``types``: the
    parser's ``positive_int``, ``non_negative_int``, ``positive_float``,
    ``non_negative_float`` and ``fraction`` argument types."""
    train.add_argument(
        "--schedule",
        choices=SCHEDULE_CHOICES,
        default=None,
        help="learning-rate schedule: constant; inverse-time (lr / (1 + "
        "--lr-decay * updates)); step (x --step-gamma every --step-epochs); "
        "exponential (x --decay-rate per epoch); cosine (to --min-lr over "
        "--epochs); plateau (x --plateau-factor after --plateau-patience epochs "
        "without a better validation loss, or training loss without "
        "--validation-split) (default: constant, inverse-time with --lr-decay)",
    )
    train.add_argument(
        "--warmup-epochs",
        type=types["non_negative_int"],
        default=0,
        metavar="N",
        help="raise the rate linearly from near 0 over the first N epochs, then "
        "run --schedule (default: 0)",
    )
    for flag, kind, metavar, what in (
        ("--step-epochs", "positive_int", "N", "step: epochs between cuts"),
        ("--step-gamma", "fraction", "G", "step: the factor of each cut"),
        ("--decay-rate", "fraction", "R", "exponential: the factor per epoch"),
        (
            "--min-lr",
            "non_negative_float",
            "LR",
            "cosine: the floor; plateau: the least rate",
        ),
        (
            "--plateau-patience",
            "positive_int",
            "N",
            "plateau: epochs without improvement",
        ),
        ("--plateau-factor", "fraction", "F", "plateau: the factor of each cut"),
    ):
        default = DEFAULTS[flag[2:].replace("-", "_")]
        train.add_argument(
            flag,
            type=types[kind],
            default=None,
            metavar=metavar,
            help=f"{what} (default: {default:g})",
        )
    train.add_argument(
        "--early-stopping",
        type=types["positive_int"],
        default=None,
        metavar="PATIENCE",
        help="stop when the validation loss has not improved for PATIENCE epochs "
        "and report with the best epoch's weights (needs --validation-split)",
    )
    train.add_argument(
        "--save-best",
        metavar="PATH.npz",
        default=None,
        help="also keep the epoch with the best validation loss in this "
        "checkpoint (needs --validation-split; --save keeps the last epoch)",
    )
    train.add_argument(
        "--log",
        metavar="PATH.csv|PATH.jsonl",
        default=None,
        help="one row per trained epoch (CSV with a header, or JSON lines), "
        "flushed each epoch; a resumed run appends to its own log",
    )
    train.add_argument(
        "--tensorboard",
        metavar="DIR",
        default=None,
        help="TensorBoard event files of the epochs' scalars in DIR (needs "
        "tensorboard: pip install 'xpnet[tensorboard]')",
    )
    train.add_argument(
        "--adam-betas",
        type=_betas,
        default=None,
        metavar="B1,B2",
        help="Adam's and AdamW's moment decay rates (default: 0.9,0.999)",
    )


def check_controls(args: argparse.Namespace, new_run: bool) -> None:
    """Refuse controls that cannot work together, each with one line; fill
    in the schedule and its parameters' defaults (recorded as used).
    ``new_run``: not resumed (a resumed run's schedule is its own)."""
    from .common import UsageError

    given = args.given
    if args.schedule is None:
        args.schedule = "inverse-time" if args.lr_decay else "constant"
    own = SCHEDULE_PARAMETERS[args.schedule]
    for key in ("lr_decay", *DEFAULTS):
        flag = "--" + key.replace("_", "-")
        if key in given and key not in own and getattr(args, key):
            raise UsageError(
                f"{flag} is not a parameter of --schedule {args.schedule}: drop it, "
                "or choose the schedule it belongs to"
            )
    for key in own:
        if getattr(args, key) is None or (key == "lr_decay" and not args.lr_decay):
            setattr(args, key, DEFAULTS[key])
    if args.schedule != "inverse-time":
        args.lr_decay = 0.0
    split = args.validation_split
    for option, value in (
        ("--early-stopping", args.early_stopping),
        ("--save-best", args.save_best),
    ):
        if value is not None and not split:
            raise UsageError(
                f"{option} watches the validation loss: add --validation-split F "
                "(e.g. 0.1) to hold out part of the training set for it"
            )
    if args.adam_betas is not None and args.optimizer == "sgd":
        raise UsageError(
            "--adam-betas is for --optimizer adam or adamw: drop it, or choose one"
        )
    if args.log is not None and Path(args.log).suffix not in (".csv", ".jsonl"):
        raise UsageError(
            f"--log {args.log!r}: the name must end in .csv or .jsonl (the format)"
        )
    if args.tensorboard is not None:
        _check_tensorboard(Path(args.tensorboard))
    if new_run and args.warmup_epochs and args.warmup_epochs >= args.epochs:
        raise UsageError(
            f"--warmup-epochs {args.warmup_epochs} leaves nothing of --epochs "
            f"{args.epochs} for the schedule: warm up for fewer epochs"
        )


def _check_tensorboard(folder: Path) -> None:
    """``--tensorboard DIR``: the package is there and DIR can be a folder."""
    import importlib.util

    from .common import UsageError

    if importlib.util.find_spec("tensorboard") is None:
        raise UsageError(
            "--tensorboard needs the tensorboard package: pip install "
            "'xpnet[tensorboard]' (or pip install tensorboard)"
        )
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise UsageError(
            f"--tensorboard {str(folder)!r} is not a directory: give a folder name"
        )


def build_schedule(args: argparse.Namespace, lr: float, steps: int) -> Any:
    """The schedule of a new run, ``steps`` updates per epoch (in update
    counts, as the optimizer runs it)."""
    from ..schedules import (
        Constant,
        CosineDecay,
        ExponentialDecay,
        InverseTimeDecay,
        StepDecay,
        Warmup,
    )

    name = args.schedule
    warmup = args.warmup_epochs * steps
    schedule: Any
    if name == "inverse-time":
        schedule = InverseTimeDecay(lr, args.lr_decay)
    elif name == "step":
        schedule = StepDecay(lr, args.step_epochs * steps, args.step_gamma)
    elif name == "exponential":
        schedule = ExponentialDecay(lr, args.decay_rate, steps)
    elif name == "cosine":
        total = max(1, args.epochs * steps - warmup)
        schedule = CosineDecay(lr, total, args.min_lr)
    else:  # constant, plateau (a callback lowers it)
        schedule = Constant(lr)
    return Warmup(schedule, warmup) if warmup else schedule


def control_callbacks(args: argparse.Namespace, resumed: bool) -> list[Any]:
    """The library callbacks the controls ask for, in the order they must
    run: the decisions first (so the checkpoint saved after them holds
    their state), then the writers. ``resumed``: logs are continued."""
    from ..callbacks import (
        CSVLogger,
        EarlyStopping,
        JSONLinesLogger,
        ReduceLROnPlateau,
        TensorBoard,
    )

    out: list[Any] = []
    if args.early_stopping is not None:
        out.append(
            EarlyStopping(patience=args.early_stopping, restore_best_weights=True)
        )
    if args.schedule == "plateau":
        monitor = "val_loss" if args.validation_split else "loss"
        out.append(
            ReduceLROnPlateau(
                monitor,
                factor=args.plateau_factor,
                patience=args.plateau_patience,
                min_lr=args.min_lr,
            )
        )
    if args.log is not None:
        logger = CSVLogger if args.log.endswith(".csv") else JSONLinesLogger
        out.append(logger(args.log, append=resumed and Path(args.log).exists()))
    if args.tensorboard is not None:
        out.append(TensorBoard(args.tensorboard))
    return out
