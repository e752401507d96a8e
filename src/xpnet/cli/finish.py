"""How an ``xpnet train`` run ends: the ``done:`` line (why training
stopped) and the ``--json`` object, a run with nothing left to train, and
Ctrl-C or a signal (one line saying what the checkpoint holds)."""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np

from .. import __version__
from ..terminal import printable
from .common import Exit, device_facts, end_bar_line, print_json
from .plot import loss_name, run_title
from .trainrun import TrainRun

__all__ = [
    "finish",
    "finished_holds",
    "loss_before_training",
    "nothing_to_train",
    "stopped",
    "worse_warning",
]

#: training rows the loss before training is measured on (evenly spaced,
#: so data sorted by class gives a fair start)
START_ROWS = 1024

#: why training stopped, in the done: line
STOPPED = {
    "epochs": "--epochs {epochs} reached",
    "early_stopping": "early stopping: no better validation loss in {patience}; "
    "best epoch {best_epoch}, its weights restored",
}


def stopped(
    run: TrainRun, model: Any, history: list[dict[str, Any]], exc: BaseException
) -> None:
    """Ctrl-C or a signal: one line saying what the checkpoint holds and how
    to continue; the unfinished epoch is dropped, so --resume continues
    exactly."""
    from ..interrupts import Terminated

    target, config = run.target, run.config
    if run.plot is not None:
        run.plot.draw_on_stop(history)
    how = str(exc) if isinstance(exc, Terminated) else "interrupted"
    if model.epochs_trained >= config.epochs:
        # The stop came after the last epoch (e.g. a reader that left while
        # its line was printed): there is no epoch to name and no run to
        # continue, and a resume hint would train nothing.
        message = f"{how} after the last epoch; {finished_holds(run)}"
    else:
        again = f"xpnet train --resume {target.path} --epochs {config.epochs}"
        if run.rank is not None:
            again = f"mpiexec -n {run.rank.comm.size} {again} --distributed"
        hint = f" (continue with: {again})" if target.epoch is not None else ""
        message = f"{how} in epoch {model.epochs_trained + 1}; {target.holds()}{hint}"
    run.args.report.update(error=message, stop_reason="interrupt")
    if run.writes:  # one message per run, not one per rank
        print(f"{end_bar_line()}xpnet: {printable(message)}", file=sys.stderr)
    raise Exit(exc.exit_code if isinstance(exc, Terminated) else 1) from None


def finished_holds(run: TrainRun) -> str:
    """What the checkpoint holds once training has ended (every epoch, or
    early stopping), for a stop after that: nothing is left to continue."""
    return f"{run.target.holds()} (training had finished: nothing to continue)"


# -- finish ------------------------------------------------------------------------
def nothing_to_train(run: TrainRun) -> int:
    """``--epochs`` counts the total: a finished run says so and exits 0."""
    saved = run.saved
    assert saved is not None
    done = saved.model.epochs_trained
    if run.plot is not None:
        run.plot.title = run_title(
            run.target.path, saved.model, saved.options, saved.dataset
        )
        run.plot.loss = loss_name(saved.model, saved.options)
        run.plot.draw_on_stop(saved.history)
    print(
        f"xpnet: {run.resume} already holds {done} epoch{'s' * (done != 1)} "
        f"(--epochs {run.config.epochs} is the total): nothing to train",
        file=sys.stderr,
    )
    finish(
        run,
        records=[],
        seconds=0.0,
        epochs_trained=done,
        config=saved.options,
        dataset=saved.dataset,
        test_accuracy=saved.history[-1].get("test_accuracy") if saved.history else None,
        stop_reason="epochs",
        best_epoch=None,
    )
    return 0


def _epochs(count: int) -> str:
    return f"{count} epoch{'s' * (count != 1)}"


def finish(
    run: TrainRun,
    *,
    records: list[dict[str, Any]],
    seconds: float,
    epochs_trained: int,
    config: dict[str, Any],
    dataset: dict[str, Any] | None,
    test_accuracy: Any,
    stop_reason: str,
    best_epoch: int | None,
    warning: str | None = None,
) -> None:
    """The final line (printed even with --quiet), ``warning`` (see
    :func:`worse_warning`) and the --json line, which holds it too."""
    ran = len(records)
    if ran:
        why = STOPPED.get(stop_reason, stop_reason).format(
            epochs=run.config.epochs,
            patience=_epochs(run.config.early_stopping or 0),
            best_epoch=best_epoch,
        )
        line = f"done: {ran} epoch{'s' * (ran != 1)} in {seconds:.1f} s ({why})"
    else:
        line = f"done: 0 epochs, {epochs_trained} trained"
    if isinstance(test_accuracy, float):
        line += f", test accuracy {100 * test_accuracy:.2f}%"
    print(line, flush=True)
    if warning is not None and run.writes:
        print(f"xpnet: warning: {warning}", file=sys.stderr, flush=True)
    if run.config.json:
        print_json(
            {
                "command": "train",
                "xpnet_version": __version__,
                "config": config,
                "device": device_facts(run.backend),
                "dataset": dataset,
                "epochs_trained": epochs_trained,
                "history": records,
                "seconds": seconds,
                "checkpoint": run.config.save,
                "stop_reason": stop_reason,
                "best_epoch": best_epoch,
                **({"warning": warning} if warning is not None else {}),
                **run.args.report.get("distributed", {}),
            }
        )


# -- a run that ends worse than it started -------------------------------------------
def loss_before_training(model: Any, data: Any) -> float | None:
    """The model's loss on up to :data:`START_ROWS` evenly spaced training
    rows before this run's first update (one forward pass, before the step
    loop), or None where it cannot be had (e.g. non-finite outputs)."""
    from ..errors import XpnetError

    n = len(data.x_train)
    if not n:
        return None
    rows = slice(None, None, max(1, n // START_ROWS))
    try:
        with np.errstate(over="ignore", invalid="ignore", under="ignore"):
            loss = model.evaluate(data.x_train[rows], data.y_train[rows])["loss"]
    except XpnetError:
        return None
    return float(loss) if math.isfinite(loss) else None


def worse_than_start(start: float | None, final: Any) -> bool:
    """The rule of the warning: the final training loss is more than twice
    the loss before training and above it by more than 1. A healthy run's
    epoch losses lie below its start (the mean over an epoch of updates of a
    resumed, converged model may exceed its start by a little, hence the
    margin); a diverged one, e.g. ``--lr 50``, ends many times above it."""
    if start is None or not isinstance(final, float) or not math.isfinite(final):
        return False
    return final > 2 * start and final > start + 1


def worse_warning(start: float | None, final: Any) -> str | None:
    """The warning of a run that ended worse than it started
    (:func:`worse_than_start`), or None: exit 0 still, the epochs were
    trained as asked."""
    if not worse_than_start(start, final):
        return None
    return (
        f"the training loss ended at {final:.4g}, above {start:.4g} before "
        "training: the run diverged; try a smaller --lr"
    )
