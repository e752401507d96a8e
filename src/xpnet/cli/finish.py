"""How an ``xpnet train`` run ends: the ``done:`` line (why training
stopped) and the ``--json`` object, a run with nothing left to train, and
Ctrl-C or a signal (one line saying what the checkpoint holds)."""

from __future__ import annotations

import sys
from typing import Any

from .. import __version__
from ..terminal import printable
from .common import Exit, device_facts, end_bar_line, print_json
from .plot import loss_name, run_title
from .trainrun import TrainRun

__all__ = ["finish", "nothing_to_train", "stopped"]

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
    again = f"xpnet train --resume {target.path} --epochs {config.epochs}"
    if run.rank is not None:
        again = f"mpiexec -n {run.rank.comm.size} {again} --distributed"
    hint = f" (continue with: {again})" if target.epoch is not None else ""
    message = f"{how} in epoch {model.epochs_trained + 1}; {target.holds()}{hint}"
    run.args.report.update(error=message, stop_reason="interrupt")
    if run.writes:  # one message per run, not one per rank
        print(f"{end_bar_line()}xpnet: {printable(message)}", file=sys.stderr)
    raise Exit(exc.exit_code if isinstance(exc, Terminated) else 1) from None


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
) -> None:
    """The final line (printed even with --quiet) and the --json line."""
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
                **run.args.report.get("distributed", {}),
            }
        )
