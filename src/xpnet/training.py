"""The training loop and its step, apart from the model.

:class:`TrainStep` is one optimisation step on a batch; :func:`fit` runs the
epochs around it (shuffling, batches, metrics, callbacks, divergence checks).
The model (:class:`~xpnet.model.Sequential`) owns the layers, forward and
backward; :meth:`Sequential.fit` calls :func:`fit`.

The step has three extension points, each with the generic Array-API path as
the reference:

1. **Gradient reduction.** ``TrainStep(model, reduce_gradients=f)`` calls
   ``f(grads)`` once per step with the model's flat gradient buffer (every
   gradient of the step, :attr:`Parameters.grads`), e.g. to all-reduce it
   across processes; ``f`` returns the buffer to use (the same one when it
   reduces in place; see :meth:`Parameters.set_grads`). When ``f`` has an
   ``on_layer(layer)`` method, backward calls it after each layer (to start
   that layer's reduction early, see ``OverlappedAllReduce``).
2. **The update.** ``backend.ops.apply_update(optimizer, params, prescaled)``:
   the generic one runs the optimizer's rule (written once, see
   :mod:`xpnet.optimizers`) over the flat buffers; a backend may fuse it.
3. **The whole step.** ``backend.ops.make_step(model, ...)`` may return a
   replacement for :class:`TrainStep` (e.g. a captured CUDA graph);
   :func:`make_train_step` falls back to the generic step.

Nothing in the loop reads the device per batch, and little runs per batch
besides the step: X and the targets are gathered once per epoch (the batches
are contiguous slices), one-hot targets are built once per fit, and the step's
outputs are kept so that the epoch's loss and accuracy are a few whole-epoch
operations, read back once (see ``tests/test_kernel_budget.py``). A progress
bar (``verbose=1`` on a terminal) adds one read per redraw, a few a second by
wall clock, and none in the steps between (see :mod:`xpnet.progress`).
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

import array_api_compat

from .arraytypes import Array, ArrayLike
from .distributed.communicator import Communicator, SingleProcess
from .distributed.data_parallel import (
    check_in_step,
    evaluate_sharded,
    gradient_reducer,
    sum_over_ranks,
    training_facts,
)
from .distributed.data_parallel import start as start_ranks
from .distributed.sharding import ShardPlan
from .errors import DivergenceError, XpnetError
from .fastpaths import StepFn
from .interrupts import held_signals
from .progress import Progress, for_verbose
from .rng import permutation, validation_split

if TYPE_CHECKING:
    from .model import Sequential

__all__ = [
    "DIVERGENCE_FACTOR",
    "DivergenceGuard",
    "History",
    "TrainStep",
    "check_count",
    "fit",
    "make_train_step",
]

#: fit stops when an epoch's mean loss exceeds this many times the reference
#: loss measured before the first step (see :class:`DivergenceGuard`)
DIVERGENCE_FACTOR = 100.0
#: the reference loss is at least this, so a start near 0 cannot make the
#: limit tiny (e.g. MSE on all-zero targets)
DIVERGENCE_FLOOR = 0.01
#: at most this many samples (the first of X) measure the reference loss
DIVERGENCE_SAMPLES = 1024

GradientReducer = Callable[[Array], Array]
F = TypeVar("F", bound=Callable[..., Any])


def on_model_device(function: F) -> F:
    """Run ``function(model, ...)`` (or a method of the model) with the model's
    device current (see :meth:`xpnet.backend.Backend.context`)."""

    @functools.wraps(function)
    def run(model: Sequential, *args: Any, **kwargs: Any) -> Any:
        with model.backend.context():
            return function(model, *args, **kwargs)

    return cast(F, run)


class History:
    """Per-epoch records of :func:`fit`, as Keras users know it.

    ``history.records`` is a list of dicts with keys ``epoch`` (from 1),
    ``loss``, ``accuracy`` (training, ``None`` without class labels),
    ``val_loss``, ``val_accuracy`` (when validation data was given),
    ``seconds`` (wall time of the epoch's training steps, device synchronised),
    ``samples_per_second`` and, data parallel over more than one rank,
    ``samples`` (this rank's rows). ``history.history["loss"]`` gives one
    column.
    """

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    @property
    def history(self) -> dict[str, list[Any]]:
        keys: list[str] = []
        for record in self.records:
            keys += [k for k in record if k not in keys]
        return {k: [r.get(k) for r in self.records] for k in keys}

    def __getitem__(self, key: str) -> list[Any]:
        return self.history[key]

    def __len__(self) -> int:
        return len(self.records)

    def __repr__(self) -> str:
        return f"History({self.records!r})"


class TrainStep:
    """One update of ``model`` on a batch: forward, loss, backward, gradient
    reduction, optimizer update.

    ``step(xb, yb)`` takes ``xb: (batch, in_features)`` and targets on the
    model's device and returns ``(loss, out)``: the batch's mean loss (0-d) and
    the outputs ``(batch, out_features)``, both on the device, nothing read
    back. For optimizers whose update is linear in ``lr * grad`` (SGD) the
    learning rate is folded into ``dL/dout`` (tiny) before backpropagation, so
    the gradients arrive scaled and the update skips a pass over every
    parameter.
    """

    def __init__(
        self, model: Sequential, reduce_gradients: GradientReducer | None = None
    ) -> None:
        self.model = model
        self.reduce_gradients = reduce_gradients

    def __call__(self, xb: Array, yb: Array) -> tuple[Array, Array]:
        out = self.model.forward(xb)
        loss = self.model.loss.value(out, yb)
        self._backpropagate_and_update(out, yb)
        return loss, out

    def update(self, xb: Array, yb: Array, total: int | None = None) -> Array:
        """The step without its loss value: returns the outputs ``(batch,
        out_features)``. :func:`fit` keeps them and computes the epoch's loss
        and accuracy from them once per epoch, not once per step.

        ``total``: the rows of the whole batch when ``xb`` is only this
        process's share of it (data-parallel): the loss gradient is then
        divided by ``total``, not by the rows here, so that the sum of the
        shares (the all-reduce) is the gradient of the whole batch's mean. A
        share may have no rows (its gradients are zero).
        """
        out = self.model.forward(xb)
        self._backpropagate_and_update(out, yb, total)
        return out

    def _backpropagate_and_update(
        self, out: Array, yb: Array, total: int | None = None
    ) -> None:
        model = self.model
        optimizer = model.optimizer
        folded = optimizer.folds_lr
        scale = optimizer.lr if folded else 1.0
        rows = out.shape[0]
        if total is None or rows == total:
            grad = model.loss.grad(out, yb, scale)
        elif rows:
            # The loss divides by the rows it sees: rows/total makes it 1/total.
            grad = model.loss.grad(out, yb, scale * rows / total)
        else:
            grad = model.xp.zeros_like(out)
        # An overlapping reducer starts each layer's sum as backward passes it.
        model.backward(grad, getattr(self.reduce_gradients, "on_layer", None))
        params = model.parameters
        if self.reduce_gradients is not None:
            params.set_grads(self.reduce_gradients(params.gather_grads()))
        model.backend.ops.apply_update(optimizer, params, prescaled=folded)


def make_train_step(
    model: Sequential, reduce_gradients: GradientReducer | None = None
) -> StepFn:
    """The backend's own whole step if it has one, else :class:`TrainStep`."""
    native = model.backend.ops.make_step(model, reduce_gradients=reduce_gradients)
    return native if native is not None else TrainStep(model, reduce_gradients)


class DivergenceGuard:
    """Decides after each epoch whether training has diverged.

    The reference loss is measured on the first batch (at least 256, at most
    1024 samples, the first of the first epoch's order) before its update:
    the larger of the model's loss there and the loss of all-zero outputs
    (``ln K`` for K-class cross-entropy on logits, ``ln 2`` for BCE on logits,
    half the mean squared target norm for MSE), and at least 0.01, so that a
    start near 0 (an already trained model, zero targets) cannot make the limit
    tiny. When the first step sees that many samples (``batch_size >= 256``),
    :func:`fit` takes its outputs (:meth:`terms`, read back with the first
    epoch's metrics: no pass of its own); otherwise the guard runs one forward
    pass on ``X[:256]`` and reads it back when made. An epoch diverged when its
    mean loss is NaN/inf or more than :data:`DIVERGENCE_FACTOR` times the
    reference, any weight is NaN/inf, the weights it ends with give a NaN/inf
    loss on the reference samples (:meth:`loss_now`: one forward pass per
    epoch, read back with the epoch's metrics), or the validation loss is
    NaN/inf. ``own_pass`` forces the pass of its own (data parallel: a rank's first
    step sees only its share of the batch, and every rank must agree).
    """

    def __init__(
        self,
        model: Sequential,
        X: Array,
        y: Array,
        batch_size: int,
        own_pass: bool = False,
    ):
        self.model = model
        #: how many of the first samples the reference is measured on
        self.rows = min(X.shape[0], max(batch_size, 256), DIVERGENCE_SAMPLES)
        #: whether :attr:`reference` and :attr:`limit` are set
        self.measured = False
        self.reference = self.limit = math.nan
        if own_pass or self.rows > batch_size:
            out = self.model.forward(X[: self.rows, ...])
            model_loss, zero_loss = model.read_floats(
                *self.terms(out, y[: self.rows, ...])
            )
            self.set_reference(model_loss, zero_loss)

    def terms(self, out: Array, y: Array) -> list[Array]:
        """The two 0-d losses the reference is the larger of, for the outputs
        ``out: (rows, outputs)`` of the first :attr:`rows` samples before any
        update and their targets ``y``: the model's, and all-zero outputs'."""
        loss, xp = self.model.loss, self.model.xp
        return [loss(out, y), loss(xp.zeros_like(out), y)]

    def set_reference(self, model_loss: float, zero_loss: float) -> None:
        """Set the reference and the limit from the two :meth:`terms`."""
        start = max(model_loss, zero_loss)
        if math.isnan(model_loss) or math.isnan(zero_loss):
            start = math.nan
        self.reference = max(start, DIVERGENCE_FLOOR)  # NaN stays NaN
        # A start that is already NaN/inf leaves only the non-finite checks.
        finite = math.isfinite(self.reference)
        self.limit = DIVERGENCE_FACTOR * self.reference if finite else math.inf
        self.measured = True

    def loss_now(self, X: Array, targets: Array) -> Array:
        """The 0-d loss of the current weights on the first :attr:`rows`
        samples of ``X: (n, features)`` (in their given order) against the
        loss's float ``targets``, on the device. The epoch's mean loss comes
        from the outputs each batch had *before* its update, so an epoch whose
        last updates overflow the weights can report a finite loss while its
        final weights give NaN: this is the check of what would be saved."""
        out = self.model.forward(X[: self.rows, ...])
        return self.model.loss.value(out, targets[: self.rows, ...])

    def check_epoch(
        self, mean_loss: float, weight_sum: float, loss_now: float = 0.0
    ) -> None:
        """Raise :class:`DivergenceError` if the epoch's numbers show divergence.

        ``weight_sum``: the sum of all parameters, finite whenever they all are
        (unless finite values overflow it, which then costs a full check).
        ``loss_now``: :meth:`loss_now` after the epoch, read back.
        """
        if not math.isfinite(mean_loss):
            raise self.error(f"the loss is {mean_loss}")
        if mean_loss > self.limit:
            raise self.error(
                f"the loss {mean_loss:.4g} is over {DIVERGENCE_FACTOR:g}x the "
                f"starting loss {self.reference:.4g}"
            )
        if not math.isfinite(weight_sum) and not self.model.weights_finite():
            raise self.error("the weights hold NaN or infinite values")
        if not math.isfinite(loss_now):
            raise self.error(
                f"the weights after its last update give a loss of {loss_now} on "
                f"the first {self.rows} samples"
            )

    def check_validation(self, val_loss: float) -> None:
        if not math.isfinite(val_loss):
            raise self.error(f"the validation loss is {val_loss}")

    def error(self, why: str) -> DivergenceError:
        return divergence(self.model, why)


def divergence(model: Sequential, why: str) -> DivergenceError:
    """The one-line error of a run that diverged in its last epoch, ``why``."""
    return DivergenceError(
        f"training diverged in epoch {model.epochs_trained}: {why}; lower the "
        f"learning rate (now {model.optimizer.lr:g}), e.g. by 10x"
    )


@on_model_device
def fit(
    model: Sequential,
    X: ArrayLike,
    y: ArrayLike,
    epochs: int = 1,
    batch_size: int = 32,
    *,
    validation_data: tuple[ArrayLike, ArrayLike] | None = None,
    validation_split: float | None = None,
    shuffle: bool = True,
    on_batch: Callable[[int], None] | None = None,
    on_epoch_end: Callable[[dict[str, Any]], Any] | None = None,
    check_inputs: bool = True,
    verbose: int = 0,
    progress: Progress | None = None,
    step: StepFn | None = None,
    communicator: Communicator | None = None,
) -> History:
    """Train ``model`` for ``epochs`` passes over ``X: (samples, features)``.

    See :meth:`xpnet.model.Sequential.fit` for the arguments; ``progress``
    replaces the display that ``verbose`` chooses, and ``step`` the model's
    training step (default :func:`make_train_step`).
    Divergence is checked after each epoch by :class:`DivergenceGuard`, before
    ``on_epoch_end`` (so a callback that saves checkpoints never saves a
    diverged epoch); the model then holds the diverged weights and counts that
    epoch in ``epochs_trained``.

    ``communicator`` (see :mod:`xpnet.distributed`) of more than one rank: data
    parallel. Every rank passes the same data and options; ``batch_size`` is
    the global batch, each rank takes its share of every batch
    (:class:`~xpnet.distributed.ShardPlan`) and the step all-reduces the
    gradients. Each record's ``samples`` is this rank's count.
    """
    epochs = check_count("epochs", epochs, minimum=0)
    batch_size = check_count("batch_size", batch_size, minimum=1)
    if progress is None:
        progress = for_verbose(verbose)
    if validation_split is not None and validation_data is not None:
        raise XpnetError(
            "fit got both validation_data and validation_split: pass one (the "
            "split holds out part of X, y as the validation data)"
        )
    X = model.prepare_inputs(X, check=check_inputs)
    n = X.shape[0]
    y, labels, task = model.prepare_targets(y, n, "y", check_inputs, model.task)
    # (X, targets, labels) of the validation rows, checked and on the device
    validation: tuple[Array, Array, Array | None] | None = None
    if validation_split is not None:
        X, y, labels, validation = _split(model, validation_split, X, y, labels)
        n = X.shape[0]
    elif validation_data is not None:
        Xv = model.prepare_inputs(validation_data[0], "validation X", check_inputs)
        yv, labels_v, _ = model.prepare_targets(
            validation_data[1], Xv.shape[0], "validation y", check_inputs, task
        )
        validation = (Xv, yv, labels_v)
    if model.task is None:
        model.task = task
        model.target_ndim = y.ndim if task == "regression" else None
    comm = communicator if communicator is not None else SingleProcess()
    plan = ShardPlan(n, batch_size, comm.rank, comm.size)
    if plan.sharded:
        if step is not None:
            raise XpnetError(
                "fit cannot share a replacement step between ranks: pass step or "
                "communicator, not both"
            )
        start_ranks(
            model,
            comm,
            training_facts(
                model, X, y, batch_size, shuffle, validation and validation[:2]
            ),
        )
        step = TrainStep(model, gradient_reducer(comm, model))
    step = step or model.step_function()
    # Without update() (a replacement step), take the outputs of a full step.
    update = getattr(step, "update", None) or (lambda xb, yb: step(xb, yb)[1])
    history = History()
    if not epochs:
        return history
    guard = DivergenceGuard(model, X, y, batch_size, own_pass=plan.sharded)
    ops = model.backend.ops
    chunk = _batches_per_gather(batch_size, X.shape[1], ops.gather_bytes)
    # Reused by every gather of this fit where the backend can write into it
    # (NumPy): no fresh pages to fault in per chunk.
    rows = min(n, chunk * batch_size)
    buffer = ops.rows_buffer(rows, X) if shuffle else None
    # Once per fit: the float targets the loss compares with (one-hot labels).
    targets = model.loss.targets(y, model.out_features)
    # A signal to one rank is held back until the next step's all-reduce,
    # where all ranks agree to stop (see xpnet.interrupts).
    total_epochs = model.epochs_trained + epochs
    with contextlib.ExitStack() as stack:
        if plan.sharded:
            stack.enter_context(held_signals())
        if progress is not None:
            stack.callback(progress.close)
        for _ in range(epochs):
            if progress is not None:
                progress.start_epoch(model.epochs_trained + 1, total_epochs, n)
            record = _epoch(
                model,
                comm,
                (X, targets, labels),
                plan,
                (update, chunk, buffer),
                guard,
                (on_batch, progress),
                shuffle,
            )
            if validation is not None:
                if plan.sharded:
                    val = evaluate_sharded(model, comm, *validation, 1024)
                else:
                    val = model.evaluate_prepared(*validation, 1024)
                guard.check_validation(val["loss"])
                record["val_loss"] = val["loss"]
                record["val_accuracy"] = val["accuracy"]
            if communicator is not None:
                # This rank's rows, also for one rank (sharded runs set it).
                record.setdefault("samples", plan.n_local)
            history.records.append(record)
            if progress is not None:
                # Before on_epoch_end: its output comes after the bar is gone.
                progress.end_epoch(record, total_epochs)
            if on_epoch_end is not None:
                on_epoch_end(record)
    return history


def _epoch(
    model: Sequential,
    comm: Communicator,
    data: tuple[Array, Array, Array | None],
    plan: ShardPlan,
    stepping: tuple[Callable[..., Array], int, Array | None],
    guard: DivergenceGuard,
    watchers: tuple[Callable[[int], None] | None, Progress | None],
    shuffle: bool,
) -> dict[str, Any]:
    """One epoch of :func:`fit` (this rank's share of it): its record.

    ``data``: X, the float targets and the labels (or None); ``stepping``: the
    update function, the batches per gather and the backend's reused gather
    buffer (or None); ``watchers``: ``on_batch`` and the progress display."""
    on_batch, progress = watchers
    X, targets, labels = data
    update, per_gather, buffer = stepping
    xp, device, ops = model.xp, model.backend.device, model.backend.ops
    n = X.shape[0]
    start = time.perf_counter()
    # Positions, in the epoch's order, of this rank's rows: the same
    # permutation on every rank, each takes its share of every batch.
    rows = permutation(model.shuffle_rng, n) if shuffle else None
    if plan.sharded:
        mine = plan.rows
        rows = mine if rows is None else rows[mine]
    order = model.backend.asarray(rows) if rows is not None else None
    Te, Le = targets, labels
    if order is not None:
        Te = xp.take(targets, order, axis=0)
        Le = xp.take(labels, order, axis=0) if labels is not None else None
    n_local = plan.n_local
    # The step's outputs are kept, so loss and accuracy cost a few whole-
    # epoch operations instead of a few per step.
    outs = xp.empty((n_local, model.out_features), dtype=model.dtype, device=device)
    keep_in_place = array_api_compat.is_writeable_array(outs)
    parts: list[Array] = []
    running = _RunningMetrics(model, Te, Le) if progress is not None else None
    batches = plan.batches
    for g in range(0, len(batches), per_gather):
        group = batches[g : g + per_gather]
        c0, c1 = group[0].lo, group[-1].hi
        # One gather per group of batches, then contiguous slices: few
        # operations per step, and the rows are still in cache when used.
        if order is None:
            Xc = X[c0:c1, ...]
        else:
            into = buffer[: c1 - c0, ...] if buffer is not None else None
            Xc = ops.take_rows(X, order[c0:c1], into)
        for batch in group:
            lo, hi = batch.lo, batch.hi
            xb, yb = Xc[lo - c0 : hi - c0, ...], Te[lo:hi, ...]
            out = update(xb, yb, batch.total) if plan.sharded else update(xb, yb)
            if keep_in_place:
                outs[lo:hi, ...] = out
            else:
                parts.append(out)
            if on_batch is not None:
                on_batch(batch.done)
            if (
                progress is not None
                and running is not None
                and hi > running.done
                and progress.due()
            ):
                # This rank's rows only: the display needs no communication.
                kept = outs if keep_in_place else parts
                progress.show(batch.done, *running.read(kept, hi))
    if not keep_in_place and parts:
        outs = xp.concat(parts, axis=0)
    metrics = [xp.sum(model.parameters.flat), guard.loss_now(X, targets)]
    if n_local:
        metrics.append(model.loss.value(outs, Te))
        if Le is not None:
            metrics.append(model.loss.correct(outs, Le))
    if not guard.measured:
        # The first step's outputs, kept from before its update.
        metrics += guard.terms(outs[: guard.rows, ...], Te[: guard.rows, ...])
    # One read-back for the weights' sum (any NaN or inf weight makes it
    # non-finite), the loss, the hits and the guard's reference in the first
    # epoch; it also waits for the device.
    weight_sum, loss_now, *local = model.read_floats(*metrics)
    if not guard.measured:
        guard.set_reference(*local[-2:])
        local = local[:-2]
    seconds = time.perf_counter() - start
    if plan.sharded:
        sums = [local[0] * n_local, local[1]] if n_local else [0.0, 0.0]
        loss_sum, hit_sum = sum_over_ranks(comm, sums)
        check_in_step(comm, weight_sum)
        mean_loss, hits = loss_sum / n, [hit_sum] if Le is not None else []
    else:
        mean_loss, hits = local[0], local[1:]
    model.epochs_trained += 1
    guard.check_epoch(mean_loss, weight_sum, loss_now)
    return {
        "epoch": model.epochs_trained,
        "loss": mean_loss,
        "accuracy": hits[0] / n if hits else None,
        "seconds": seconds,
        "samples_per_second": n / seconds if seconds > 0 else math.inf,
        **({"samples": n_local} if plan.sharded else {}),
    }


class _RunningMetrics:
    """The epoch's mean loss and accuracy so far, for a progress bar: each
    :meth:`read` adds the rows stepped since the previous one (a few whole-
    array operations) and reads them back in one read."""

    def __init__(self, model: Sequential, targets: Array, labels: Array | None):
        self.model, self.targets, self.labels = model, targets, labels
        self.done = 0  # rows counted so far
        self.parts_done = 0  # of the step outputs kept as a list
        self.loss_sum = 0.0
        self.hits = 0.0

    def read(self, outs: Array | list[Array], hi: int) -> tuple[float, float | None]:
        """``(mean loss, accuracy or None)`` over rows ``[0, hi)`` of the
        epoch; ``outs``: the epoch's outputs, as one array or the list of the
        step outputs so far."""
        model, lo = self.model, self.done
        if isinstance(outs, list):
            new = model.xp.concat(outs[self.parts_done :], axis=0)
            self.parts_done = len(outs)
        else:
            new = outs[lo:hi, ...]
        metrics = [model.loss.value(new, self.targets[lo:hi, ...])]
        if self.labels is not None:
            metrics.append(model.loss.correct(new, self.labels[lo:hi]))
        mean, *hits = model.read_floats(*metrics)
        self.loss_sum += mean * (hi - lo)
        self.hits += hits[0] if hits else 0.0
        self.done = hi
        return self.loss_sum / hi, (self.hits / hi if hits else None)


def _split(
    model: Sequential,
    fraction: float,
    X: Array,
    y: Array,
    labels: Array | None,
) -> tuple[Array, Array, Array | None, tuple[Array, Array, Array | None]]:
    """``(X, y, labels)`` of the training rows, then the same of the
    held-out validation rows (see :func:`xpnet.rng.validation_split`)."""
    from .backend import to_numpy

    xp = model.xp
    host_labels = to_numpy(labels) if labels is not None else None
    train, val = validation_split(model.seed, X.shape[0], fraction, host_labels)
    train_rows, val_rows = model.backend.asarray(train), model.backend.asarray(val)

    def rows(a: Array | None, which: Array) -> Array | None:
        return None if a is None else xp.take(a, which, axis=0)

    held = (rows(X, val_rows), rows(y, val_rows), rows(labels, val_rows))
    return rows(X, train_rows), rows(y, train_rows), rows(labels, train_rows), held


def _batches_per_gather(batch_size: int, features: int, size: int) -> int:
    """Whole batches per gather: about ``size`` bytes of float32 rows (the
    backend's :attr:`~xpnet.fastpaths.Ops.gather_bytes`), at least one."""
    return max(1, size // (4 * features * batch_size))


def check_count(name: str, value: Any, minimum: int) -> int:
    """``value`` if it is an integer >= ``minimum``, else a one-line XpnetError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise XpnetError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value
