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

:func:`fit` itself is a page: the data prepared once, the data-parallel
strategy (:mod:`xpnet.strategy`; one process is the identity), then epochs of
batches from :func:`xpnet.batching.epoch_batches` with callbacks around them
(:mod:`xpnet.callbacks`): the divergence guard, the history and the progress
display are callbacks too.

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
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

from .arraytypes import Array, ArrayLike
from .callbacks.base import Callback, CallbackList, LambdaCallback, checked_callbacks
from .divergence import DIVERGENCE_FACTOR, DivergenceGuard, divergence
from .epoch import Epoch
from .epoch_history import history_row
from .errors import XpnetError
from .fastpaths import StepFn
from .inputs import inputs_seen
from .progress import Progress, ProgressCallback, for_verbose
from .rng import validation_split
from .strategy import Strategy

if TYPE_CHECKING:
    from .distributed.communicator import Communicator
    from .model import Sequential

__all__ = [
    "DIVERGENCE_FACTOR",
    "DivergenceGuard",
    "History",
    "TrainStep",
    "check_count",
    "divergence",
    "fit",
    "make_train_step",
]

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


class History(Callback):
    """Per-epoch records of :func:`fit`, as Keras users know it (the callback
    every fit has).

    ``history.records`` is a list of dicts with keys ``epoch`` (from 1),
    ``loss``, ``accuracy`` (training, ``None`` without class labels),
    ``seconds`` (wall time of the epoch's training steps, device synchronised),
    ``samples_per_second``, ``val_loss``, ``val_accuracy`` (when validation
    data was given), ``lr`` (the learning rate of the epoch's first update)
    and, with a communicator, ``samples`` (this rank's rows).
    ``history.history["loss"]`` gives one column. ``stop_reason``: why fit
    stopped (``"epochs"``, or what the callback that stopped it said, e.g.
    ``"early_stopping"``).
    """

    def __init__(self, rows: list[dict[str, Any]] | None = None) -> None:
        self.records: list[dict[str, Any]] = []
        self.stop_reason = "epochs"
        #: where each epoch's :func:`~xpnet.epoch_history.history_row` goes
        #: too (fit's: the model's ``epoch_history``), or None
        self.rows = rows

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        self.records.append(logs)
        if self.rows is not None:
            self.rows.append(history_row(logs))

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

    def update(
        self,
        xb: Array,
        yb: Array,
        total: int | None = None,
        weight: Array | None = None,
    ) -> Array:
        """The step without its loss value: returns the outputs ``(batch,
        out_features)``. :func:`fit` keeps them and computes the epoch's loss
        and accuracy from them once per epoch, not once per step.

        ``total``: the rows of the whole batch when ``xb`` is only this
        process's share of it (data-parallel): the loss gradient is then
        divided by ``total``, not by the rows here, so that the sum of the
        shares (the all-reduce) is the gradient of the whole batch's mean. A
        share may have no rows (its gradients are zero). ``weight``: the
        batch's sample weights ``(batch,)`` (one process only): the loss is
        their weighted mean (see :mod:`xpnet.losses`).
        """
        out = self.model.forward(xb)
        self._backpropagate_and_update(out, yb, total, weight)
        return out

    def _backpropagate_and_update(
        self,
        out: Array,
        yb: Array,
        total: int | None = None,
        weight: Array | None = None,
    ) -> None:
        model = self.model
        optimizer = model.optimizer
        folded = optimizer.folds_lr
        scale = optimizer.lr if folded else 1.0
        rows = out.shape[0]
        if total is None or rows == total:
            grad = model.loss.grad(out, yb, scale, weight)
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
    callbacks: Sequence[Callback] | Callback | None = None,
    on_batch: Callable[[int], None] | None = None,
    on_epoch_end: Callable[[dict[str, Any]], Any] | None = None,
    check_inputs: bool = True,
    verbose: int = 0,
    progress: Progress | None = None,
    step: StepFn | None = None,
    communicator: Communicator | None = None,
    sample_weight: ArrayLike | None = None,
) -> History:
    """Train ``model`` for ``epochs`` passes over ``X: (samples, features)``.

    See :meth:`xpnet.model.Sequential.fit` for the arguments; ``progress``
    replaces the display that ``verbose`` chooses, and ``step`` the model's
    training step (default :func:`make_train_step`). The callbacks run in
    this order: the :class:`DivergenceGuard` (it raises
    :class:`~xpnet.errors.DivergenceError` before any other callback sees a
    diverged epoch; the model then holds the diverged weights and counts that
    epoch in ``epochs_trained``), the :class:`History`, the progress display,
    ``callbacks``, then ``on_batch``/``on_epoch_end``. Training stops early
    when a callback sets ``model.stop_training``.

    ``communicator`` (see :mod:`xpnet.distributed`): data parallel through
    its strategy (:meth:`~xpnet.distributed.Communicator.data_parallel`).
    """
    epochs = check_count("epochs", epochs, minimum=0)
    batch_size = check_count("batch_size", batch_size, minimum=1)
    callbacks = checked_callbacks(callbacks)
    validation_data = _checked_validation_data(validation_data)
    progress = for_verbose(verbose) if progress is None else progress
    X, y, labels, validation = _prepare(
        model, X, y, validation_data, validation_split, check_inputs
    )
    weight = _sample_weights(
        model, sample_weight, X.shape[0], validation_split, communicator, step
    )
    strategy = Strategy() if communicator is None else communicator.data_parallel()
    held_out = validation[:2] if validation is not None else None
    step = strategy.start(model, X, y, batch_size, shuffle, held_out, step)
    history = History(model.epoch_history)
    if not epochs:
        return history
    plan = strategy.plan(X.shape[0], batch_size)
    guard = DivergenceGuard(model, X, y, batch_size, own_pass=strategy.sharded)
    shown = [ProgressCallback(progress)] if progress is not None else []
    given = [*callbacks, *_plain_functions(on_batch, on_epoch_end)]
    params = {
        "epochs": model.epochs_trained + epochs,
        "initial_epoch": model.epochs_trained,
        "samples": X.shape[0],
        "batch_size": batch_size,
        "steps": len(plan.batches),
        "validation": validation is not None,
        "lead": strategy.lead,
    }
    calls = CallbackList([guard, history, *shown, *given], model, params)
    epoch = Epoch(model, strategy, plan, X, y, labels, step, shuffle, calls, weight)
    model.stop_training, model.stop_reason = False, None
    with contextlib.ExitStack() as stack:
        stack.enter_context(strategy.running())
        stack.callback(calls.close)
        if progress is not None:
            stack.callback(progress.close)
        calls.train_begin()
        for _ in range(epochs):
            calls.epoch_begin(model.epochs_trained + 1)
            record = epoch.run()
            if validation is not None:
                val = strategy.evaluate(model, *validation)
                record["val_loss"], record["val_accuracy"] = (
                    val["loss"],
                    val["accuracy"],
                )
            calls.epoch_end(model.epochs_trained, record)
            optimizer = model.optimizer
            stop, optimizer.lr_factor = strategy.agree(
                model.stop_training, optimizer.lr_factor
            )
            if stop:
                history.stop_reason = model.stop_reason or "callback"
                break
        calls.train_end({"stop_reason": history.stop_reason})
    return history


def _plain_functions(
    on_batch: Callable[[int], None] | None,
    on_epoch_end: Callable[[dict[str, Any]], Any] | None,
) -> list[Callback]:
    """``fit``'s ``on_batch(samples_done)`` and ``on_epoch_end(record)`` as
    callbacks."""
    out: list[Callback] = []
    if on_batch is not None:
        out.append(LambdaCallback(on_batch_end=lambda _, logs: on_batch(logs.done)))
    if on_epoch_end is not None:
        out.append(LambdaCallback(on_epoch_end=lambda _, logs: on_epoch_end(logs)))
    return out


def _checked_validation_data(given: Any) -> tuple[ArrayLike, ArrayLike] | None:
    """``validation_data`` as ``(X_val, y_val)``, or a one-line XpnetError."""
    if given is None:
        return None
    if not isinstance(given, tuple | list) or len(given) != 2:
        what = (
            f"a {type(given).__name__} of {len(given)}"
            if isinstance(given, tuple | list)
            else f"a {type(given).__name__}"
        )
        raise XpnetError(
            f"validation_data must be a pair (X_val, y_val), got {what}: e.g. "
            "validation_data=(X_val, y_val)"
        )
    return given[0], given[1]


def _prepare(
    model: Sequential,
    X: ArrayLike,
    y: ArrayLike,
    validation_data: tuple[ArrayLike, ArrayLike] | None,
    validation_split: float | None,
    check_inputs: bool,
) -> tuple[Array, Array, Array | None, tuple[Array, Array, Array | None] | None]:
    """``(X, y, labels, validation)`` checked and on the device, the
    validation rows held out (``validation``: their X, targets and labels, or
    None); the first fit fixes the model's task."""
    if validation_split is not None and validation_data is not None:
        raise XpnetError(
            "fit got both validation_data and validation_split: pass one (the "
            "split holds out part of X, y as the validation data)"
        )
    given = X
    X = model.prepare_inputs(X, check=check_inputs)
    # For saves that must say how the inputs were prepared (xpnet.save).
    model.inputs_seen = inputs_seen(given, X, check_inputs)
    y, labels, task = model.prepare_targets(
        y, X.shape[0], "y", check_inputs, model.task
    )
    validation: tuple[Array, Array, Array | None] | None = None
    if validation_split is not None:
        X, y, labels, validation = _split(model, validation_split, X, y, labels)
    elif validation_data is not None:
        Xv = model.prepare_inputs(validation_data[0], "validation X", check_inputs)
        yv, labels_v, _ = model.prepare_targets(
            validation_data[1], Xv.shape[0], "validation y", check_inputs, task
        )
        validation = (Xv, yv, labels_v)
    if model.task is None:
        model.task = task
        model.target_ndim = y.ndim if task == "regression" else None
    return X, y, labels, validation


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


def _sample_weights(
    model: Sequential,
    sample_weight: ArrayLike | None,
    n: int,
    validation_split: float | None,
    communicator: Communicator | None,
    step: StepFn | None,
) -> Array | None:
    """``sample_weight`` checked (``(n,)``, finite, non-negative, not all
    zero) and on the device in the model's dtype; ``None`` for none."""
    if sample_weight is None:
        return None
    for given, what in (
        (validation_split, "validation_split (pass validation_data)"),
        (communicator, "a communicator (one process only)"),
        (step, "a replacement step"),
    ):
        if given is not None:
            raise XpnetError(f"fit cannot combine sample_weight with {what}")
    weight = model.to_device(sample_weight, model.dtype_name)
    if tuple(weight.shape) != (n,):
        raise XpnetError(
            f"sample_weight has shape {tuple(weight.shape)}, X has {n} rows: pass "
            "one weight per row"
        )
    xp = model.xp
    # One read: the sum is finite only when every weight is (short of overflow).
    total, lowest = model.read_floats(xp.sum(weight), xp.min(weight))
    if not (math.isfinite(total) and total > 0 and lowest >= 0):
        raise XpnetError(
            "sample_weight must hold finite, non-negative weights, not all zero"
        )
    return weight


def check_count(name: str, value: Any, minimum: int) -> int:
    """``value`` if it is an integer >= ``minimum``, else a one-line XpnetError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise XpnetError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value
