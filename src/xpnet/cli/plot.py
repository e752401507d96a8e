"""``xpnet plot``: a checkpoint's loss and accuracy per epoch as a picture;
also the drawing that ``xpnet train --plot`` and ``xpnet evaluate --plot`` use.

matplotlib (the ``[plot]`` extra) is checked, and the output path validated,
before any work starts (:func:`xpnet.figures.check_output`).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import figures
from ..atomic import OwnedOutput
from ..terminal import printable
from .common import UsageError, say
from .parser import PLOT_EVERY_S

#: the kinds of picture, as recorded in a PNG's ownership mark
CURVES, CONFUSION = "curves", "confusion"


def layer_sizes(model: Any) -> list[int]:
    """``[in_features, width of each Dense layer...]`` of a model."""
    return [model.in_features] + [
        layer.out_features for layer in model.layers if hasattr(layer, "out_features")
    ]


def run_title(
    source: str | os.PathLike | None,
    model: Any,
    options: dict[str, Any],
    dataset: dict[str, Any],
) -> str:
    """One line naming the run: file, architecture, data, optimizer, batch."""
    parts = ["-".join(map(str, layer_sizes(model)))]
    if options.get("activation"):
        parts[0] += f" {options['activation']}"
    if dataset.get("name"):
        parts.append(Path(str(dataset["name"])).name)
    optimizer, lr = options.get("optimizer"), options.get("lr")
    if optimizer:
        parts.append(
            f"{optimizer.upper() if optimizer == 'sgd' else optimizer.capitalize()}"
            + (f" lr {lr:g}" if isinstance(lr, int | float) else "")
        )
    if options.get("batch_size"):
        parts.append(f"batch {options['batch_size']}")
    name = Path(source).name if source is not None else "xpnet train"
    return f"{name}: " + ", ".join(parts)


def loss_name(model: Any, options: dict[str, Any]) -> str:
    return str(options.get("loss") or type(model.loss).__name__)


def draw_curves(
    output: OwnedOutput,
    history: Sequence[dict[str, Any]],
    *,
    title: str,
    loss: str,
    marker: str | None,
) -> None:
    """Write the loss and accuracy curves of ``history`` to ``output``."""
    fig = figures.curves_figure(history, title=title, loss=loss)
    figures.save_figure(fig, output, marker)


def run(args: argparse.Namespace) -> int:
    from ..checkpoint import Checkpoint

    out = args.output or str(Path(args.model).with_suffix(".png"))
    marker = figures.marker_of(CURVES, args.model)
    # Without -o, the picture's name was not the user's: do not blame -o.
    option = "-o" if args.output else "the default picture (-o names another)"
    output = figures.open_output(out, option, overwrite=args.overwrite, marker=marker)
    path = output.path
    ckpt = Checkpoint.from_file(args.model, "cpu")
    if not ckpt.history:
        trained = ckpt.model.epochs_trained
        if trained:
            # Saved by an xpnet.save or ModelCheckpoint before 0.2.0, which
            # kept a library model's weights but not its epochs' losses.
            raise UsageError(
                f"checkpoint {args.model!r} holds {trained} trained "
                f"epoch{'s' * (trained != 1)} but no record of their loss "
                "(saved without a history, by an older xpnet): nothing to plot"
            )
        raise UsageError(
            f"checkpoint {args.model!r} holds no finished epoch yet: nothing to plot"
        )
    draw_curves(
        output,
        ckpt.history,
        title=run_title(args.model, ckpt.model, ckpt.options, ckpt.dataset),
        loss=loss_name(ckpt.model, ckpt.options),
        marker=marker,
    )
    epochs = len(ckpt.history)
    say(args, f"{path}: {epochs} epoch{'s' * (epochs != 1)} of {args.model}")
    return 0


class LivePlot:
    """The curves ``xpnet train --plot PATH`` draws: the path is checked when
    the run starts; the picture is drawn when the run ends (also when it is
    stopped) and, while it runs, after an epoch at most every
    :data:`~xpnet.cli.parser.PLOT_EVERY_S` seconds."""

    def __init__(self, path: str, *, overwrite: bool, checkpoint: Path | None) -> None:
        self.marker = figures.marker_of(CURVES, checkpoint)
        self.output = figures.open_output(
            path, "--plot", overwrite=overwrite, marker=self.marker
        )
        self.path = self.output.path
        self.title = ""
        self.loss = ""
        self.last = time.monotonic()

    def due(self) -> bool:
        return time.monotonic() - self.last >= PLOT_EVERY_S

    def draw(self, history: Sequence[dict[str, Any]]) -> bool:
        """Draw ``history``; False (nothing written) when it is empty."""
        if not history:
            return False
        draw_curves(
            self.output, history, title=self.title, loss=self.loss, marker=self.marker
        )
        self.last = time.monotonic()
        return True

    def draw_on_stop(self, history: Sequence[dict[str, Any]]) -> None:
        """Draw what exists of a stopped run; problems become one notice line
        (the run's own message and exit code stay what they were)."""
        try:
            drawn = self.draw(history)
        except figures.PlotError as exc:
            print(f"xpnet: {printable(str(exc))}", file=sys.stderr)
            return
        if not drawn:
            print(f"xpnet: no epoch finished: {self.path} not drawn", file=sys.stderr)
