"""The training options a checkpoint records, defined once.

Each :class:`TrainOption` names its flag's argparse settings, its group
(which resume rule applies) and the JSON types a checkpoint may hold for it.
The ``xpnet train`` parser adds the flags from :data:`TRAIN_OPTION_TABLE`
(:func:`add_train_options`), :mod:`.resume` takes :data:`TRAIN_OPTIONS` and
the groups from it, and checkpoint validation (:mod:`xpnet.checkpoint.
validate`) the saved types (:func:`saved_types`). The training controls
(schedule, early stopping, Adam's betas) come from :mod:`.controls`, which
defines their flags with them.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any

from .argtypes import (
    ACTIVATION_CHOICES,
    DEFAULT_LR,
    INIT_CHOICES,
    LOSS_CHOICES,
    OUTPUT_ACTIVATION_CHOICES,
    fraction,
    hidden_sizes,
    non_negative_float,
    positive_float,
    positive_int,
    seed,
)
from .controls import CONTROL_OPTIONS, OLD_DEFAULTS, SAVED_TYPES

#: the model's data: a resumed run keeps it
DATA = "data"
#: the model itself: a resumed run keeps it
ARCHITECTURE = "architecture"
#: the optimizer and random state continue: a resumed run refuses changes
CONTINUED = "continued"
#: a resumed run takes the new value (and records it)
HONOURED = "honoured"

_NUMBER = (int, float)
_MAYBE_NUMBER = (int, float, type(None))


@dataclass(frozen=True)
class TrainOption:
    """One recorded option: ``name`` (the namespace's), ``group``, the JSON
    types it may be ``saved`` as, and its flag's argparse settings
    (``flag``: ``None`` where another module adds the flag)."""

    name: str
    group: str
    saved: tuple[type, ...]
    flag: dict[str, Any] | None = field(default=None)


TRAIN_OPTION_TABLE: tuple[TrainOption, ...] = (
    TrainOption("dataset", DATA, (str,)),  # added with the data options
    TrainOption(
        "hidden",
        ARCHITECTURE,
        (list,),
        dict(
            type=hidden_sizes,
            default=[256],
            metavar="N,N,...",
            help="hidden layer widths (default: 256)",
        ),
    ),
    TrainOption(
        "activation",
        ARCHITECTURE,
        (str,),
        dict(
            choices=ACTIVATION_CHOICES,
            default="relu",
            help="hidden-layer activation (default: relu)",
        ),
    ),
    TrainOption(
        "output_activation",
        ARCHITECTURE,
        (str,),
        dict(
            choices=OUTPUT_ACTIVATION_CHOICES,
            default="identity",
            help="what follows the last layer: identity (logits, for the fused "
            "losses) or, with --loss mse, sigmoid (the classic sigmoid-MSE net) or "
            "softmax; predict then reports these outputs as they are "
            "(default: identity)",
        ),
    ),
    TrainOption(
        "init",
        ARCHITECTURE,
        (str,),
        dict(
            choices=INIT_CHOICES,
            default="auto",
            help="weight initialiser of every layer; auto: he-normal before "
            "ReLU-like activations, glorot-uniform otherwise (default: auto)",
        ),
    ),
    TrainOption(
        "loss",
        ARCHITECTURE,
        (str,),
        dict(
            choices=LOSS_CHOICES,
            default="cross-entropy",
            help="cross-entropy (softmax fused) or bce (sigmoid fused), both on "
            "the last layer's logits, or mse on the --output-activation's outputs "
            "(default: cross-entropy)",
        ),
    ),
    TrainOption(
        "optimizer",
        CONTINUED,
        (str,),
        dict(choices=tuple(DEFAULT_LR), default="sgd", help="default: sgd"),
    ),
    TrainOption(
        "lr",
        CONTINUED,
        _MAYBE_NUMBER,
        dict(
            type=non_negative_float,
            default=None,
            help="learning rate (default: 0.1 for sgd, 0.06 for sgd with "
            "--standardize, 0.001 for adam and adamw)",
        ),
    ),
    TrainOption(
        "momentum",
        CONTINUED,
        _NUMBER,
        dict(
            type=non_negative_float,
            default=0.9,
            help="SGD momentum (default: 0.9)",
        ),
    ),
    TrainOption(
        "nesterov",
        CONTINUED,
        (bool,),
        dict(action="store_true", help="Nesterov momentum"),
    ),
    TrainOption(
        "weight_decay",
        CONTINUED,
        _MAYBE_NUMBER,
        dict(
            type=non_negative_float,
            default=None,
            help="L2 (sgd, adam) or decoupled (adamw) weight decay on "
            "weights (default: 0; adamw: 0.01)",
        ),
    ),
    TrainOption(
        "lr_decay",
        CONTINUED,
        _MAYBE_NUMBER,
        dict(
            type=non_negative_float,
            default=0.0,
            help="inverse-time decay per update (batch), the classic texts' "
            "decay: lr / (1 + decay * step), step = updates done (default: 0, "
            "constant; 0.001 with --schedule inverse-time)",
        ),
    ),
    *(TrainOption(name, CONTINUED, SAVED_TYPES[name]) for name in CONTROL_OPTIONS),
    TrainOption(
        "batch_size",
        HONOURED,
        (int,),
        dict(type=positive_int, default=64, help="default: 64"),
    ),
    TrainOption(
        "seed",
        CONTINUED,
        (int, type(None)),
        dict(
            type=seed,
            default=0,
            help="seed of the weights and shuffling (default: 0)",
        ),
    ),
    TrainOption(
        "dtype",
        ARCHITECTURE,
        (str,),
        dict(
            choices=("float32", "float64"), default="float32", help="default: float32"
        ),
    ),
    TrainOption(
        "deskew",
        DATA,
        (bool,),
        dict(
            action="store_true",
            help="deskew images by their moments before training",
        ),
    ),
    TrainOption(
        "scale",
        DATA,
        _MAYBE_NUMBER,
        dict(
            type=positive_float,
            default=None,
            metavar="MAX",
            help="divide the features by MAX, e.g. 255 for float pixels 0-255 "
            "(default: chosen from the data: uint8 pixels are divided by 255, "
            "other data is kept as it is; the data: line says which)",
        ),
    ),
    TrainOption(
        "no_scale",
        DATA,
        (bool,),
        dict(
            action="store_true",
            help="keep feature values as they are, uint8 pixels too",
        ),
    ),
    TrainOption(
        "standardize",
        DATA,
        (bool,),
        dict(
            action="store_true",
            help="standardise features with the training set's mean/std",
        ),
    ),
    TrainOption(
        "validation_split",
        DATA,
        _MAYBE_NUMBER,
        dict(
            type=fraction,
            default=None,
            metavar="F",
            help="hold out this fraction of the training set (0 < F < 1; "
            "stratified by class, seeded by --seed) for validation: the "
            "divergence check, early stopping and --save-best use it, never the "
            "test set; recorded, so --resume holds out the same rows",
        ),
    ),
)

#: every option a checkpoint records, in the table's order
TRAIN_OPTIONS = tuple(option.name for option in TRAIN_OPTION_TABLE)

#: what checkpoints written before an option existed were trained with: the
#: command line offered nothing else then
OLD_OPTION_DEFAULTS: dict[str, Any] = {
    "output_activation": "identity",
    "init": "auto",
    "scale": None,
    **OLD_DEFAULTS,
}


def group_of(name: str) -> str:
    return next(o.group for o in TRAIN_OPTION_TABLE if o.name == name)


def saved_types() -> dict[str, tuple[type, ...]]:
    """Option name -> the JSON types a checkpoint may record for it."""
    return {option.name: option.saved for option in TRAIN_OPTION_TABLE}


def add_train_options(
    parser: argparse.ArgumentParser, names: tuple[str, ...] | None = None
) -> None:
    """The flags of the recorded options (``names``: those only, in the
    table's order), from the table."""
    for option in TRAIN_OPTION_TABLE:
        if option.flag is not None and (names is None or option.name in names):
            flag = "--" + option.name.replace("_", "-")
            parser.add_argument(flag, **option.flag)
