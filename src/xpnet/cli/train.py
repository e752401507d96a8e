"""``xpnet train``: build or resume a model, train it, save checkpoints."""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import __version__
from ..backend import Backend, resolve
from ..checkpoint import Checkpoint
from ..datasets import choose_default_dataset
from ..distributed.data_parallel import evaluate_sharded
from ..errors import DivergenceError, XpnetError
from ..figures import PlotError
from ..preprocessing import Preprocessing, describe_scaling
from ..progress import Progress, epoch_line
from ..terminal import printable
from ..threads import busy_cpu_hint, limited_blas_threads
from ..training import divergence
from .common import (
    CheckpointWriteError,
    Exit,
    UsageError,
    check_features,
    dataset_facts,
    device_facts,
    end_bar_line,
    load_training_data,
    print_json,
    say,
    scale_option,
)
from .distributed import agreed_start
from .parser import DEFAULT_LR
from .plot import LivePlot, layer_sizes, loss_name, run_title

if TYPE_CHECKING:
    from ..runlock import CheckpointLock
    from .distributed import Rank
from .resume import (
    TRAIN_OPTIONS,
    SaveTarget,
    dataset_identity,
    reconcile_resume,
    refuse_changed_data,
    resolved,
    resume_source,
)


def _check_head(args: argparse.Namespace) -> None:
    """Refuse an output activation before a loss that maps the outputs itself."""
    head, loss = args.output_activation, args.loss
    if head != "identity" and loss != "mse":
        fused = "softmax" if loss == "cross-entropy" else "sigmoid"
        raise UsageError(
            f"--output-activation {head} with --loss {loss} maps the outputs twice "
            f"({loss} applies the {fused} to the logits itself): drop "
            "--output-activation, or use --loss mse"
        )


def _build_model(args: argparse.Namespace, data, backend: Backend):
    from ..memory import check_batch_fits, check_saved_arrays_readable
    from ..model import mlp
    from ..optimizers import get_optimizer
    from ..schedules import Constant, InverseTimeDecay

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
    # Refused before anything is allocated: too large to train, or to read back.
    rows = min(args.batch_size, max(len(data.x_train), 1))
    check_batch_fits(sizes, rows, args.dtype, len(optimizer.slot_names), backend)
    if args.save:
        check_saved_arrays_readable(sizes, args.dtype)
    return mlp(
        sizes,
        args.activation,
        output_activation=args.output_activation,
        init=args.init.replace("-", "_"),
        loss=args.loss,
        optimizer=optimizer,
        device=backend,
        dtype=args.dtype,
        seed=args.seed,
    )


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
    from ..interrupts import Terminated, deferred
    from ..runlock import CheckpointLock, LockError, remove_stale_temp_files

    # Of the ranks of a distributed run, rank 0 alone writes the checkpoint
    # and the picture.
    writes = rank is None or rank.lead
    lock: CheckpointLock | None = None
    unwritable: LockError | None = None
    start_error: XpnetError | None = None
    try:
        resume = resume_source(args)
        target = SaveTarget(args, resume)
        # matplotlib and the picture's path are checked before any work is done.
        plot = (
            LivePlot(args.plot, overwrite=args.overwrite, checkpoint=target.path)
            if args.plot and writes
            else None
        )
        backend = resolve(args.device, args.backend)
        args.describe_saved = target.holds
        if rank is not None:  # a stalled run says what is saved, too
            rank.comm.stall.note = target.holds
        if target.path is not None and writes:
            try:
                lock = CheckpointLock(target.path).acquire()
            except LockError as exc:
                if exc.busy:
                    raise
                # A read-only place: fine for a run with nothing left to train.
                unwritable = exc
            else:
                args.cleanup.append(lock.release)
                remove_stale_temp_files(target.path)
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
            model = saved.model
            if target.path is not None and resolved(Path(resume)) == resolved(
                target.path
            ):
                target.epoch = model.epochs_trained
            notices += reconcile_resume(args, saved.options, resume)
            args.dtype = model.dtype_name
            args.report["epochs_trained"] = model.epochs_trained
            if args.epochs <= model.epochs_trained:
                if plot is not None:
                    plot.title = run_title(
                        target.path, model, saved.options, saved.dataset
                    )
                    plot.loss = loss_name(model, saved.options)
                    plot.draw_on_stop(saved.history)
                return _nothing_to_train(args, saved, resume, backend)
        if unwritable is not None:
            raise CheckpointWriteError(f"{unwritable}; {target.holds()}")
        _check_head(args)  # after resuming, which refuses a head the run never had
    if resume is None and "dataset" not in args.given:
        # Recorded as chosen, so --resume and evaluate use the same data. Of
        # several ranks, rank 0 alone probes (and downloads), then tells the rest.
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
    with agreed_start(rank):  # e.g. a dataset missing on one rank
        args.dataset = dataset_identity(args.dataset)
        data = load_training_data(
            args.dataset,
            args.data_dir,
            steps=saved.preprocessing if saved else None,
            deskew=args.deskew,
            standardize=args.standardize,
            scale=scale_option(args),
            dtype=args.dtype,
            # The standardisation statistics leave out the rows fit holds out.
            held_out=(args.validation_split, args.seed)
            if args.validation_split
            else None,
        )
        if saved is not None:
            check_features(model, data, f"checkpoint {resume!r}")
            refuse_changed_data(saved.dataset, data, str(resume))
        else:
            model = _build_model(args, data, backend)
    history_so_far = list(saved.history) if saved else []
    args.report["epochs_trained"] = model.epochs_trained
    train_options = {k: getattr(args, k) for k in TRAIN_OPTIONS}
    total_epochs = args.epochs
    args.report.update(
        config=train_options, device=device_facts(backend), checkpoint=args.save
    )
    threads = None
    threads_said = ""
    # Ranks on one host share its cores: each gets its share of BLAS threads
    # (OpenBLAS's one per core on every rank oversubscribes them many times).
    setting, share = args.blas_threads, None
    if rank is not None and setting is None:
        setting, share = rank.blas_share()
    if not backend.is_gpu and setting is not None:
        stack = contextlib.ExitStack()
        args.cleanup.append(stack.close)
        threads = stack.enter_context(limited_blas_threads(setting))
        if threads:
            threads_said = f" | {threads} BLAS thread{'s' * (threads != 1)}"
            if share is not None:
                threads_said += f" per rank ({share})"
    elif not backend.is_gpu and not args.quiet:
        hint = busy_cpu_hint()
        if hint:
            notices.append(hint)
    say(
        args,
        f"xpnet {__version__} | {backend.describe()} | dtype {model.dtype_name}"
        f" | seed {model.seed}" + threads_said,
    )
    say(
        args,
        f"data: {data.name} ({data.source}): {len(data.x_train):,} train"
        + (
            f" ({args.validation_split:g} of it held out for validation)"
            if args.validation_split
            else ""
        )
        + f" / {len(data.x_test):,} test, {data.n_features} features, "
        f"{data.num_classes} classes, "
        + describe_scaling(Preprocessing.of(data).scale, scale_option(args))
        + (", deskewed" if args.deskew else "")
        + (", standardised" if args.standardize else ""),
    )
    last = max(i for i, layer in enumerate(model.layers) if layer.params)
    activation = next(
        (type(x).__name__ for x in model.layers[:last] if not x.params), "linear"
    )
    head = model.output_activation
    say(
        args,
        f"model: {'-'.join(map(str, layer_sizes(model)))} {activation}"
        + ("" if head == "identity" else f", {head} output")
        + f" | loss {type(model.loss).__name__} | {model.optimizer!r}"
        f" | batch {args.batch_size} | epochs {total_epochs}"
        + (f" | resumed at epoch {model.epochs_trained}" if resume else ""),
    )
    for notice in notices:  # may quote the checkpoint's recorded options
        print(f"xpnet: {printable(notice)}", file=sys.stderr)
    if plot is not None:
        plot.title = run_title(target.path, model, train_options, dataset_facts(data))
        plot.loss = loss_name(model, train_options)

    record = Checkpoint(
        model,
        preprocessing=Preprocessing.of(data),
        options=train_options,
        dataset=dataset_facts(data),
        history=history_so_far,
    )

    def checkpoint() -> None:
        if target.path is None:
            return
        if not writes:  # rank 0 writes the same epoch
            target.epoch = model.epochs_trained
            return
        # A signal waits for the save to finish, so the message that follows
        # it names the epoch that is really on disk.
        with deferred():
            _save(record, target, lock)
            target.epoch = target.sidecar_epoch = model.epochs_trained

    records: list[dict[str, Any]] = []
    args.report["history"] = records
    # The bar (on a terminal only) draws itself; the epoch lines are ours,
    # printed once the epoch is saved.
    progress = Progress(
        bar="auto" if writes and not (args.quiet or args.json) else False
    )
    x_train = model.to_device(data.x_train, model.dtype_name)
    test: tuple[Any, Any, Any] | None = None

    samples: list[int | None] = [None]  # this rank's rows in the last epoch

    def on_epoch_end(record: dict[str, Any]) -> None:
        # A signal during the test evaluation waits for the save: the epoch
        # just trained is not lost.
        with deferred():
            record = _evaluate_and_save(record)
        say(args, epoch_line(record, total_epochs))
        if model.epochs_trained < total_epochs and plot is not None and plot.due():
            try:
                plot.draw(history_so_far)
            except PlotError as exc:
                raise PlotError(f"{exc}; {target.holds()}") from None

    def _evaluate_and_save(record: dict[str, Any]) -> dict[str, Any]:
        """The epoch's test scores added to ``record``, its history row kept
        and the checkpoint saved; returns the record with the scores."""
        nonlocal test
        samples[0] = record.get("samples")
        # The test set is only reported: no choice made in training sees it.
        # (IDX training files may come without one.)
        if test is None and len(data.x_test):
            x_test = model.prepare_inputs(data.x_test, "test X")
            y_test, labels, _ = model.prepare_targets(
                data.y_test, x_test.shape[0], "test y", task=model.task
            )
            test = (x_test, y_test, labels)
        if test is not None:
            scores = (
                evaluate_sharded(model, rank.comm, *test, 1024)
                if rank is not None
                else model.evaluate_prepared(*test)
            )
            if not math.isfinite(scores["loss"]):
                # Not saved: the epoch a checkpoint holds must evaluate.
                raise divergence(model, f"the test loss is {scores['loss']}")
            record = {
                **record,
                "test_loss": scores["loss"],
                "test_accuracy": scores["accuracy"],
            }
        row = _history_row(record)
        records.append(row)
        history_so_far.append(row)
        args.report["epochs_trained"] = model.epochs_trained
        checkpoint()
        return record

    # The starting state first: from here on the file always holds the last
    # completed epoch, whatever interrupts the run.
    checkpoint()
    started = time.perf_counter()
    try:
        # Overflow inside a diverging epoch is reported once, by fit, as a
        # DivergenceError; NumPy's per-operation warnings would only bury it.
        with np.errstate(over="ignore", invalid="ignore", under="ignore"):
            model.fit(
                x_train,
                data.y_train,
                epochs=total_epochs - model.epochs_trained,
                batch_size=args.batch_size,
                validation_split=args.validation_split,
                on_epoch_end=on_epoch_end,
                progress=progress,
                communicator=rank.comm if rank is not None else None,
            )
    except (KeyboardInterrupt, Terminated) as exc:
        if plot is not None:
            plot.draw_on_stop(history_so_far)
        # The unfinished epoch is dropped, so --resume continues exactly.
        how = str(exc) if isinstance(exc, Terminated) else "interrupted"
        again = f"xpnet train --resume {target.path} --epochs {total_epochs}"
        if rank is not None:
            again = f"mpiexec -n {rank.comm.size} {again} --distributed"
        hint = f" (continue with: {again})" if target.epoch is not None else ""
        message = f"{how} in epoch {model.epochs_trained + 1}; {target.holds()}{hint}"
        args.report["error"] = message
        if writes:  # one message per run, not one per rank
            print(f"{end_bar_line()}xpnet: {printable(message)}", file=sys.stderr)
        raise Exit(exc.exit_code if isinstance(exc, Terminated) else 1) from None
    except DivergenceError as exc:
        if plot is not None:
            plot.draw_on_stop(history_so_far)
        raise DivergenceError(f"{exc}; {target.holds()}") from None
    total = time.perf_counter() - started
    if target.path is not None:
        say(args, f"saved {target.path}")
    if plot is not None:
        try:
            plot.draw(history_so_far)
        except PlotError as exc:
            raise PlotError(f"{exc}; {target.holds()}") from None
        say(args, f"plotted {plot.path}")
    final = records[-1] if records else {}
    if rank is not None:
        args.report["distributed"] = _ranks_facts(rank, samples[0])
    _finish(
        args,
        backend,
        records=records,
        seconds=total,
        epochs_trained=model.epochs_trained,
        config=train_options,
        dataset=dataset_facts(data),
        test_accuracy=final.get("test_accuracy"),
    )
    return 0


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


def _nothing_to_train(
    args: argparse.Namespace, saved: Checkpoint, resume: str, backend: Backend
) -> int:
    """``--epochs`` counts the total: a finished run says so and exits 0."""
    done = saved.model.epochs_trained
    print(
        f"xpnet: {resume} already holds {done} epoch{'s' * (done != 1)} "
        f"(--epochs {args.epochs} is the total): nothing to train",
        file=sys.stderr,
    )
    _finish(
        args,
        backend,
        records=[],
        seconds=0.0,
        epochs_trained=done,
        config=saved.options,
        dataset=saved.dataset,
        test_accuracy=saved.history[-1].get("test_accuracy") if saved.history else None,
    )
    return 0


def _finish(
    args: argparse.Namespace,
    backend: Backend,
    *,
    records: list[dict[str, Any]],
    seconds: float,
    epochs_trained: int,
    config: dict[str, Any],
    dataset: dict[str, Any] | None,
    test_accuracy: Any,
) -> None:
    """The final line (printed even with --quiet) and the --json line."""
    ran = len(records)
    line = (
        f"done: {ran} epoch{'s' * (ran != 1)} in {seconds:.1f} s"
        if ran
        else f"done: 0 epochs, {epochs_trained} trained"
    )
    if isinstance(test_accuracy, float):
        line += f", test accuracy {100 * test_accuracy:.2f}%"
    print(line, flush=True)
    if args.json:
        print_json(
            {
                "command": "train",
                "xpnet_version": __version__,
                "config": config,
                "device": device_facts(backend),
                "dataset": dataset,
                "epochs_trained": epochs_trained,
                "history": records,
                "seconds": seconds,
                "checkpoint": args.save,
                **args.report.get("distributed", {}),
            }
        )


def _ranks_facts(rank: Rank, samples: int | None) -> dict[str, Any]:
    """For --json: the ranks and the rows each trained on in the last epoch
    (``samples``: this rank's, from ``fit``'s record; every rank calls this)."""
    return {
        "world_size": rank.comm.size,
        "samples_per_rank": rank.comm.allgather(samples),
    }


def _history_row(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "epoch": record["epoch"],
        "loss": record["loss"],
        "train_accuracy": record.get("accuracy"),
        **(
            {"val_loss": record["val_loss"], "val_accuracy": record["val_accuracy"]}
            if "val_loss" in record
            else {}
        ),
        "test_loss": record.get("test_loss"),
        "test_accuracy": record.get("test_accuracy"),
        "seconds": record["seconds"],
        "samples_per_second": record["samples_per_second"],
    }
