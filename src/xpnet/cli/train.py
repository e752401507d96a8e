"""``xpnet train``: build or resume a model, train it, save checkpoints.

The command runs in phases: :func:`_prepare` checks every path and option
before any work (save targets and their locks, the resume rules, the
controls) and freezes the options into one ``TrainConfig`` (:func:`~.trainrun.freeze`);
:func:`_load_or_build` loads the data and builds the model (a resumed one
was read while preparing); :func:`_fit` trains with the run's callbacks (the
test report, the ``--save`` and ``--save-best`` checkpoints, early stopping,
the plateau rule, logs, the epoch lines, the live plot); and
:func:`xpnet.cli.finish.finish` prints the ``done:`` line and the ``--json``
object. What a phase opens (a lock, a BLAS thread limit) is closed by one
ExitStack however the run ends.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..backend import resolve
from ..checkpoint import Checkpoint
from ..datasets import choose_default_dataset
from ..errors import DivergenceError, XpnetError
from ..figures import PlotError
from ..preprocessing import Preprocessing
from ..progress import Progress
from ..terminal import printable
from ..threads import busy_cpu_hint, limited_blas_threads
from .build import build_model, check_head, resolve_defaults, say_start
from .common import (
    CheckpointWriteError,
    UsageError,
    check_features,
    dataset_facts,
    device_facts,
    load_training_data,
    say,
    scale_option,
    targets_of,
)
from .controls import check_controls, control_callbacks
from .distributed import agreed_start
from .epochs import EpochLine, LivePlotting, SaveLast, SignalsWait, TestReport
from .finish import (
    finish,
    finished_holds,
    loss_before_training,
    nothing_to_train,
    stopped,
    worse_warning,
)
from .plot import LivePlot, loss_name, run_title
from .resume import (
    TRAIN_OPTIONS,
    SaveTarget,
    check_save_best,
    dataset_identity,
    reconcile_resume,
    refuse_changed_data,
    resolved,
    resume_source,
)
from .trainrun import TrainRun, freeze

if TYPE_CHECKING:
    from ..runlock import CheckpointLock, LockError
    from .distributed import Rank


def run(args: argparse.Namespace) -> int:
    if not args.distributed:
        return _train(args, None)
    from .distributed import Rank

    rank = Rank(args)
    try:
        code = _train(args, rank)
    except BaseException as exc:
        rank.failed(exc)
        raise
    rank.agreed = True
    return code


def _train(args: argparse.Namespace, rank: Rank | None) -> int:
    with contextlib.ExitStack() as stack:
        run = _prepare(args, rank, stack)
        if (
            run.saved is not None
            and run.config.epochs <= run.saved.model.epochs_trained
        ):
            return nothing_to_train(run)
        model, data = _load_or_build(run)
        _fit(run, model, data, stack)
    return 0


# -- prepare the run -------------------------------------------------------------
def _prepare(
    args: argparse.Namespace, rank: Rank | None, stack: contextlib.ExitStack
) -> TrainRun:
    """Check every path and option before any work; read a resumed run's
    checkpoint and apply the resume rules; return the frozen run."""

    writes = rank is None or rank.lead
    lock: CheckpointLock | None = None
    unwritable: LockError | None = None
    start_error: XpnetError | None = None
    plot = None
    try:
        resume = resume_source(args)
        target = SaveTarget(args, resume)
        check_save_best(args, resume, target)
        # matplotlib and the picture's path are checked before any work is done.
        if args.plot and writes:
            plot = LivePlot(args.plot, overwrite=args.overwrite, checkpoint=target.path)
        backend = resolve(args.device, args.backend)
        args.describe_saved = target.holds
        if rank is not None:  # a stalled run says what is saved, too
            rank.comm.stall.note = target.holds
        if target.path is not None and writes:
            lock, unwritable = _lock(target.path, stack)
    except XpnetError as exc:
        if rank is None:
            raise
        start_error = exc
    if rank is not None:
        # Every rank checks its paths, then they agree: one message, no abort.
        rank.agree_on_start(start_error)
        rank.check_options(args, TRAIN_OPTIONS)
    saved: Checkpoint | None = None
    notices: list[str] = []
    if writes and target.notice:
        notices.append(target.notice)
    # Each rank reads the checkpoint alone, then they agree (one line from
    # rank 0, no abort), as they do on every start-up check below.
    with agreed_start(rank):
        if resume:
            saved = Checkpoint.from_file(resume, backend)
            if target.path is not None and resolved(Path(resume)) == resolved(
                target.path
            ):
                target.epoch = saved.model.epochs_trained
            if "dataset" not in saved.options and "dataset" not in args.given:
                # A library checkpoint (xpnet.save) names no dataset: mnist,
                # the default, would be a guess.
                raise UsageError(
                    f"checkpoint {resume!r} does not name the dataset it was "
                    "trained on (saved by the library): pass --dataset"
                )
            notices += reconcile_resume(args, saved.options, resume)
            args.dtype = saved.model.dtype_name
            args.report["epochs_trained"] = saved.model.epochs_trained
        run = TrainRun(
            freeze(args), args, rank, backend, target, plot, saved, resume, notices
        )
        run.lock = lock
        if saved is not None and args.epochs <= saved.model.epochs_trained:
            return run
        if unwritable is not None:
            raise CheckpointWriteError(f"{unwritable}; {target.holds()}")
        check_head(args)  # after resuming, which refuses a head the run never had
        check_controls(args, new_run=saved is None)
        if saved is None:
            resolve_defaults(args)
    if resume is None and "dataset" not in args.given:
        _choose_dataset(args, rank, writes)
    args.dataset = dataset_identity(args.dataset)
    run.config = freeze(args)
    return run


def _lock(
    path: Path, stack: contextlib.ExitStack
) -> tuple[CheckpointLock | None, LockError | None]:
    """``(lock, None)``: the checkpoint's lock, taken for the run (released by
    ``stack``); ``(None, error)`` for a read-only place (fine for a run with
    nothing left to train)."""
    from ..runlock import CheckpointLock, LockError, remove_stale_temp_files

    try:
        lock = CheckpointLock(path).acquire()
    except LockError as exc:
        if exc.busy:
            raise
        return None, exc
    stack.callback(lock.release)
    remove_stale_temp_files(path)
    return lock, None


def _choose_dataset(args: argparse.Namespace, rank: Rank | None, writes: bool) -> None:
    """No --dataset: the default, recorded as chosen, so --resume and evaluate
    use the same data. Of several ranks, rank 0 alone probes (and downloads),
    then tells the rest."""
    notice = None
    if writes:
        args.dataset, notice = choose_default_dataset(
            args.data_dir, progress=sys.stderr.isatty()
        )
    if rank is not None:
        with rank.comm.stall.paused():  # rank 0 may be downloading
            args.dataset = rank.comm.allgather(args.dataset)[0]
    if notice:
        print(f"xpnet: {notice}", file=sys.stderr, flush=True)


# -- load or build -----------------------------------------------------------------
def _load_or_build(run: TrainRun) -> tuple[Any, Any]:
    """The data (preprocessed as recorded when resuming) and the model."""
    with agreed_start(run.rank):  # e.g. a dataset missing on one rank
        return _load_or_build_agreed(run)


def _load_or_build_agreed(run: TrainRun) -> tuple[Any, Any]:
    config, saved = run.config, run.saved
    data = load_training_data(
        config.dataset,
        config.data_dir,
        steps=saved.preprocessing if saved else None,
        deskew=config.deskew,
        standardize=config.standardize,
        scale=scale_option(config),
        dtype=config.dtype,
        # The standardisation statistics leave out the rows fit holds out.
        held_out=(config.validation_split, config.seed)
        if config.validation_split
        else None,
        targets=targets_of(saved.model if saved else None),
    )
    if saved is not None:
        check_features(saved.model, data, f"checkpoint {run.resume!r}")
        refuse_changed_data(saved.dataset, data, str(run.resume))
        return saved.model, data
    return build_model(config, data, run.backend, _steps_per_epoch(config, data)), data


def _steps_per_epoch(config: Any, data: Any) -> int:
    """The updates of one epoch: batches of the rows fit trains on."""
    from ..rng import validation_split

    n = len(data.x_train)
    if config.validation_split:
        y = np.asarray(data.y_train)
        labels = y if y.dtype.kind in "iub" and y.ndim == 1 else None
        train, _ = validation_split(config.seed, n, config.validation_split, labels)
        n = len(train)
    return max(1, -(-n // config.batch_size))


# -- fit ---------------------------------------------------------------------------
def _fit(run: TrainRun, model: Any, data: Any, stack: contextlib.ExitStack) -> None:
    from ..interrupts import Terminated

    config, args, target, plot = run.config, run.args, run.target, run.plot
    history_so_far = list(run.saved.history) if run.saved else []
    options = run.options()
    args.report["epochs_trained"] = model.epochs_trained
    args.report.update(
        config=options, device=device_facts(run.backend), checkpoint=config.save
    )
    threads = _threads(run, stack)
    say_start(config, model, data, run.backend, threads, run.saved is not None)
    for notice in run.notices:  # may quote the checkpoint's recorded options
        print(f"xpnet: {printable(notice)}", file=sys.stderr)
    if plot is not None:
        plot.title = run_title(target.path, model, options, dataset_facts(data))
        plot.loss = loss_name(model, options)
    record = Checkpoint(
        model,
        preprocessing=Preprocessing.of(data),
        options=options,
        dataset=dataset_facts(data),
        history=history_so_far,
    )
    save = _saver(run, model, record)
    rows: list[dict[str, Any]] = []
    args.report["history"] = rows
    callbacks, controls = _callbacks(run, model, data, record, rows, save)
    start_loss = loss_before_training(model, data)
    # The starting state first: from here on the file always holds the last
    # completed epoch, whatever interrupts the run.
    save()
    started = time.perf_counter()
    try:
        # Overflow inside a diverging epoch is reported once, by fit, as a
        # DivergenceError; NumPy's per-operation warnings would only bury it.
        with np.errstate(over="ignore", invalid="ignore", under="ignore"):
            history = model.fit(
                model.to_device(data.x_train, model.dtype_name),
                data.y_train,
                epochs=config.epochs - model.epochs_trained,
                batch_size=config.batch_size,
                validation_split=config.validation_split,
                callbacks=callbacks,
                # The bar (on a terminal only) draws itself; the epoch lines
                # are ours, printed once the epoch is saved.
                progress=Progress(
                    bar="auto"
                    if run.writes and not (config.quiet or config.json)
                    else False
                ),
                communicator=run.rank.comm if run.rank is not None else None,
            )
    except (KeyboardInterrupt, Terminated) as exc:
        stopped(run, model, history_so_far, exc)
    except DivergenceError as exc:
        args.report["stop_reason"] = "divergence"
        if plot is not None:
            plot.draw_on_stop(history_so_far)
        raise DivergenceError(f"{exc}; {target.holds()}") from None
    seconds = time.perf_counter() - started
    # A stop from here on (e.g. a reader that leaves before the done: line)
    # says that training had finished, with no resume hint.
    args.describe_saved = lambda: finished_holds(run)
    if target.path is not None:
        say(config, f"saved {target.path}")
    best = next((c for c in controls if c.state_key == "model_checkpoint"), None)
    if best is not None and best.best_epoch:
        say(
            config,
            f"saved {config.save_best} (epoch {best.best_epoch}, the best "
            "validation loss)",
        )
    if plot is not None:
        try:
            plot.draw(history_so_far)
        except PlotError as exc:
            raise PlotError(f"{exc}; {target.holds()}") from None
        say(config, f"plotted {plot.path}")
    if run.rank is not None:
        samples = history.records[-1].get("samples") if history.records else None
        args.report["distributed"] = {
            "world_size": run.rank.comm.size,
            "samples_per_rank": run.rank.comm.allgather(samples),
        }
    stopper = next((c for c in controls if c.state_key == "early_stopping"), None)
    best_epoch = stopper.best_epoch or None if stopper is not None else None
    reported = rows[-1] if rows else {}
    if history.stop_reason == "early_stopping" and best_epoch is not None:
        # The model now holds the best epoch's weights: report its scores.
        reported = next(r for r in history_so_far if r["epoch"] == best_epoch)
    finish(
        run,
        records=rows,
        seconds=seconds,
        epochs_trained=model.epochs_trained,
        config=options,
        dataset=dataset_facts(data),
        test_accuracy=reported.get("test_accuracy"),
        stop_reason=history.stop_reason,
        best_epoch=best_epoch,
        warning=worse_warning(start_loss, reported.get("loss")),
    )


def _threads(run: TrainRun, stack: contextlib.ExitStack) -> str:
    """The BLAS thread limit for the run, as the first line says it: that of
    --blas-threads, or a rank's share of its host's cores; else a hint."""
    config = run.config
    if run.backend.is_gpu:
        return ""
    # Ranks on one host share its cores: each gets its share of BLAS threads
    # (OpenBLAS's one per core on every rank oversubscribes them many times).
    setting, share = config.blas_threads, None
    if run.rank is not None and setting is None:
        setting, share = run.rank.blas_share()
    if setting is not None:
        threads = stack.enter_context(limited_blas_threads(setting))
        if not threads:
            return ""
        said = f" | {threads} BLAS thread{'s' * (threads != 1)}"
        return said + (f" per rank ({share})" if share is not None else "")
    hint = None if config.quiet else busy_cpu_hint()
    if hint:
        run.notices.append(hint)
    return ""


def _saver(run: TrainRun, model: Any, record: Checkpoint) -> Any:
    """The ``--save`` checkpoint's writer: the record, atomically; other
    ranks only note the epoch rank 0 writes."""
    from ..interrupts import deferred

    target = run.target

    def save() -> None:
        if target.path is None:
            return
        if not run.writes:  # rank 0 writes the same epoch
            target.epoch = model.epochs_trained
            return
        # A signal waits for the save to finish, so the message that follows
        # it names the epoch that is really on disk.
        with deferred():
            _save(record, target, run.lock)
            target.epoch = target.sidecar_epoch = model.epochs_trained
        run.args.report["epochs_trained"] = model.epochs_trained

    return save


def _save(record: Checkpoint, target: SaveTarget, lock: CheckpointLock | None) -> None:
    """Write ``record`` to ``target`` (exclusively the first time, when the
    file is new to this run), checking the lock first and locking each new
    version of the file; every failure is one line saying what is on disk."""
    from ..atomic import OutputError
    from ..checkpoint import SidecarWriteError
    from ..runlock import LockError

    assert target.path is not None
    try:
        if lock is not None:
            lock.verify()
        record.to_file(
            target.path,
            exclusive=target.exclusive and target.epoch is None,
            before_replace=lock.adopt if lock is not None else None,
        )
    except SidecarWriteError as exc:
        target.epoch = record.model.epochs_trained
        raise CheckpointWriteError(target.sidecar_failed(exc)) from None
    except (OSError, OutputError, LockError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise CheckpointWriteError(
            f"cannot write {str(target.path)!r} ({why}); " + target.holds()
        ) from None


def _callbacks(
    run: TrainRun,
    model: Any,
    data: Any,
    record: Checkpoint,
    rows: list[dict[str, Any]],
    save: Any,
) -> tuple[list[Any], list[Any]]:
    """``(callbacks for fit, the controls' stateful ones)``, in the order
    they run after each epoch: the test report, the decisions (early
    stopping, plateau), the ``--save`` and ``--save-best`` checkpoints (all
    four with signals held), then the logs, the epoch line and the plot."""
    from ..callbacks import ModelCheckpoint

    config = run.config
    controls = control_callbacks(config, resumed=run.saved is not None)
    decisions = [c for c in controls if c.state_key is not None]
    writers = [c for c in controls if c.state_key is None]
    best = []
    if config.save_best is not None:
        best = [
            ModelCheckpoint(
                config.save_best, save_best_only=True, overwrite=True, record=record
            )
        ]
    stateful = [*decisions, *best]
    record.callbacks = stateful
    if run.saved is not None:
        run.saved.restore_callbacks(stateful)
    history = record.history
    held: list[Any] = []
    if len(data.x_test):  # IDX training files may come without a test set
        comm = run.rank.comm if run.rank is not None else None
        held.append(TestReport(data.x_test, data.y_test, comm))
    held += [*decisions, SaveLast(rows, history, save), *best]
    shown: list[Any] = [EpochLine(lambda text: say(config, text), config.epochs)]
    if run.plot is not None:
        shown.append(LivePlotting(run.plot, history, config.epochs, run.target.holds))
    return [SignalsWait(held), *writers, *shown], stateful
