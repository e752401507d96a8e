"""``xpnet train``'s model: the defaults a new run resolves (recorded as
used), the network and its optimizer and schedule, and the start-up lines
that describe them."""

from __future__ import annotations

import argparse
from typing import Any

from .. import __version__
from ..backend import Backend
from ..preprocessing import Preprocessing, describe_scaling
from .argtypes import DEFAULT_LR
from .common import UsageError, say, scale_option
from .controls import build_schedule
from .plot import layer_sizes


def check_head(args: Any) -> None:
    """Refuse an output activation before a loss that maps the outputs itself."""
    head, loss = args.output_activation, args.loss
    if head != "identity" and loss != "mse":
        fused = "softmax" if loss == "cross-entropy" else "sigmoid"
        raise UsageError(
            f"--output-activation {head} with --loss {loss} maps the outputs twice "
            f"({loss} applies the {fused} to the logits itself): drop "
            "--output-activation, or use --loss mse"
        )


def resolve_defaults(args: argparse.Namespace) -> None:
    """A new run's learning rate and weight decay, defaults filled in (the
    checkpoint records what was used)."""
    from ..optimizers import OPTIMIZERS

    if args.lr is None:
        args.lr = DEFAULT_LR[args.optimizer]
        if args.optimizer == "sgd" and args.standardize:
            # Standardised MNIST inputs have 4x the mean square norm of pixels
            # in [0, 1]; at 0.1 with momentum 0.9 SGD's steps then grow the loss
            # without bound. 0.06 did best on a validation split of the sample
            # (0.04-0.07).
            args.lr = 0.06
    if args.weight_decay is None:
        args.weight_decay = OPTIMIZERS[args.optimizer]().weight_decay


def build_model(config: Any, data: Any, backend: Backend, steps: int) -> Any:
    """The network of a new run; ``steps``: updates per epoch (for the
    schedule, given in epochs)."""
    from ..memory import check_batch_fits, check_saved_arrays_readable
    from ..model import mlp
    from ..optimizers import get_optimizer

    schedule = build_schedule(config, config.lr, steps)
    settings: dict[str, Any] = {"lr": schedule, "weight_decay": config.weight_decay}
    if config.optimizer == "sgd":
        settings.update(momentum=config.momentum, nesterov=config.nesterov)
    elif config.adam_betas is not None:
        settings.update(beta1=config.adam_betas[0], beta2=config.adam_betas[1])
    optimizer = get_optimizer(config.optimizer, **settings)
    outputs = data.num_classes if config.loss != "bce" or data.num_classes > 2 else 1
    sizes = [data.n_features, *config.hidden, outputs]
    # Refused before anything is allocated: too large to train, or to read back.
    rows = min(config.batch_size, max(len(data.x_train), 1))
    check_batch_fits(sizes, rows, config.dtype, len(optimizer.slot_names), backend)
    if config.save:
        check_saved_arrays_readable(sizes, config.dtype)
    return mlp(
        sizes,
        config.activation,
        output_activation=config.output_activation,
        init=config.init.replace("-", "_"),
        loss=config.loss,
        optimizer=optimizer,
        device=backend,
        dtype=config.dtype,
        seed=config.seed,
    )


def say_start(
    config: Any,
    model: Any,
    data: Any,
    backend: Backend,
    threads: str,
    resumed: bool,
) -> None:
    """The three start-up lines: versions and device (``threads``: the BLAS
    threads as said, e.g. `` | 2 BLAS threads``), data, model."""
    say(
        config,
        f"xpnet {__version__} | {backend.describe()} | dtype {model.dtype_name}"
        f" | seed {model.seed}" + threads,
    )
    say(
        config,
        f"data: {data.name} ({data.source}): {len(data.x_train):,} train"
        + (
            f" ({config.validation_split:g} of it held out for validation)"
            if config.validation_split
            else ""
        )
        + f" / {len(data.x_test):,} test, {data.n_features} features, "
        + _targets(data)
        + describe_scaling(Preprocessing.of(data).scale, scale_option(config))
        + (", deskewed" if config.deskew else "")
        + (", standardised" if config.standardize else ""),
    )
    last = max(i for i, layer in enumerate(model.layers) if layer.params)
    activation = next(
        (type(x).__name__ for x in model.layers[:last] if not x.params), "linear"
    )
    head = model.output_activation
    say(
        config,
        f"model: {'-'.join(map(str, layer_sizes(model)))} {activation}"
        + ("" if head == "identity" else f", {head} output")
        + f" | loss {type(model.loss).__name__} | {model.optimizer!r}"
        f" | batch {config.batch_size} | epochs {config.epochs}"
        + (f" | resumed at epoch {model.epochs_trained}" if resumed else ""),
    )


def _targets(data: Any) -> str:
    """``"10 classes, "``, or a regressor's ``"float targets (2 outputs), "``."""
    if data.num_classes or data.y_train.dtype.kind != "f":
        return f"{data.num_classes} classes, "
    outputs = data.y_train.shape[1] if data.y_train.ndim == 2 else 1
    return f"float targets ({outputs} output{'s' * (outputs != 1)}), "
