"""The model: :class:`Sequential` and :func:`mlp`.

The model owns the layers, their forward and backward passes, the flat
parameter buffers (:class:`~xpnet.parameters.Parameters`) and inference; the
training loop and its step live in :mod:`xpnet.training`. The device and
namespace are resolved once, when the model is built.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import array_api_compat

from . import backend as _backend
from . import inputs as _inputs
from .activations import (
    ACTIVATIONS,
    RELU_LIKE,
    Identity,
    Sigmoid,
    Softmax,
    activation_name,
    get_activation,
)
from .arraytypes import Array, ArrayLike, HostArray
from .errors import XpnetError
from .fastpaths import StepFn
from .layers import Dense, Layer
from .losses import CrossEntropy, Loss, get_loss
from .memory import check_model_fits
from .optimizers import SGD, Optimizer, get_optimizer
from .parameters import Parameters
from .progress import Progress
from .rng import make_rngs
from .training import History, check_count, make_train_step, on_model_device
from .training import fit as _fit

if TYPE_CHECKING:
    from .callbacks import Callback
    from .distributed.communicator import Communicator


class Sequential:
    """A stack of layers trained by backpropagation.

    Args:
        layers: e.g. ``[Dense(784, 256), ReLU(), Dense(256, 10)]``. Dense layers
            with ``init="auto"`` get He-normal weights when followed by a
            ReLU-like activation and Glorot-uniform otherwise.
        loss: a name (``"cross-entropy"``, ``"mse"``, ``"bce"``) or a Loss.
        optimizer: a name or an :class:`~xpnet.optimizers.Optimizer`; default
            ``SGD(lr=0.1, momentum=0.9)``.
        device, backend: see :func:`xpnet.backend.resolve` (or pass a Backend).
        dtype: ``"float32"`` (default) or ``"float64"``.
        seed: seeds the host RNG that draws initial weights and shuffles.

    Task: ``model.task`` is ``None`` until the first ``fit``, then
    ``"classification"`` or ``"regression"``, fixed from then on (later fits
    and ``evaluate`` must pass targets of the same kind). The model is a
    regressor when the targets are floats and the loss is not cross-entropy
    (MSE, or BCE on float targets); integer or boolean targets are class labels
    whatever the loss (one-hot for ``K > 1`` outputs), and cross-entropy's
    float targets are class-probability rows, so it always classifies.

    Output heads: the layers after the last Dense map its outputs before the
    loss sees them. With the fused losses (cross-entropy, BCE on logits) there
    is none; MSE compares whatever the head gives with the targets, e.g. a
    Sigmoid head for the classic sigmoid-MSE classifier (see
    :func:`mlp`'s ``output_activation``).

    Raises :class:`~xpnet.errors.XpnetError` for set-ups that cannot learn:
    cross-entropy on a 1-output model (its softmax is always 1, its loss 0),
    a Softmax output layer on 1 output (always 1, for the same reason), and a
    Softmax or Sigmoid output layer before a loss that applies a mapping
    itself (``from_logits=True``, the default): the outputs would be mapped
    twice.
    """

    def __init__(
        self,
        layers: Sequence[Layer],
        *,
        loss: str | Loss = "cross_entropy",
        optimizer: str | Optimizer | None = None,
        device: str | _backend.Backend = "auto",
        backend: str | None = None,
        dtype: str = "float32",
        seed: int | None = 0,
    ):
        self.layers = list(layers)
        if not self.layers:
            raise XpnetError("a Sequential model needs at least one layer")
        for layer in self.layers:
            if not isinstance(layer, Layer):
                raise XpnetError(f"{layer!r} is not an xpnet layer")
        self.backend = _backend.resolve(device, backend)
        self.xp = self.backend.xp
        self.dtype_name = dtype
        self.dtype = self.backend.dtype(dtype)
        self.seed = seed
        self.loss = get_loss(loss)
        self.optimizer = (
            SGD(lr=0.1, momentum=0.9) if optimizer is None else get_optimizer(optimizer)
        )
        self.in_features, self.out_features = self._check_architecture()
        self._check_loss()
        # Before any allocation: a mistyped layer size is refused at once.
        check_model_fits(
            [
                (x.in_features, x.out_features)
                for x in self.layers
                if isinstance(x, Dense)
            ],
            dtype,
            len(self.optimizer.slot_names),
            self.backend,
        )
        self._init_rng, self.shuffle_rng = make_rngs(seed)
        with self.backend.context():
            self._build()
        self.epochs_trained = 0
        #: one :func:`~xpnet.epoch_history.history_row` per epoch fit finished
        #: (over the model's life; a checkpoint's history when loaded), saved
        #: with the model by xpnet.save and ModelCheckpoint for ``xpnet plot``
        self.epoch_history: list[dict[str, Any]] = []
        #: set by a callback to end fit after the current epoch (Keras's flag),
        #: with ``stop_reason`` saying why
        self.stop_training = False
        self.stop_reason: str | None = None
        #: None before fit, then "classification" or "regression"
        self.task: str | None = None
        #: ndim of the regression targets given to fit: predict returns (n,)
        #: for 1, (n, outputs) for 2
        self.target_ndim: int | None = None
        #: raise XpnetError when evaluate/predict give NaN/inf instead of
        #: answering with them (set on models read from files: xpnet.load)
        self.finite_outputs = False
        #: what the last fit saw of X (see :func:`xpnet.inputs.inputs_seen`)
        self.inputs_seen: dict[str, Any] | None = None
        #: how raw inputs become this model's (an xpnet.Preprocessing) when
        #: known: set by xpnet.load, kept by xpnet.save; None otherwise
        self.preprocessing: Any = None

    # -- construction ----------------------------------------------------------
    def _check_architecture(self) -> tuple[int, int]:
        dense = [layer for layer in self.layers if isinstance(layer, Dense)]
        if not dense:
            raise XpnetError("the model needs at least one Dense layer")
        for a, b in zip(dense, dense[1:], strict=False):
            if a.out_features != b.in_features:
                raise XpnetError(
                    f"layer sizes do not chain: a Dense with {a.out_features} outputs "
                    f"feeds a Dense with {b.in_features} inputs"
                )
        return dense[0].in_features, dense[-1].out_features

    def _check_loss(self) -> None:
        """Refuse loss and output set-ups that train without learning anything."""
        loss = self.loss
        if isinstance(loss, CrossEntropy) and self.out_features == 1:
            raise XpnetError(
                "cross-entropy needs at least 2 outputs: the softmax of 1 output is "
                "always 1 and the loss always 0; use loss='bce' for a 1-output "
                "binary model, or 2 outputs"
            )
        last = next(
            (x for x in reversed(self.layers) if not isinstance(x, Identity)), None
        )
        if isinstance(last, Softmax) and self.out_features == 1:
            raise XpnetError(
                "a Softmax output layer needs at least 2 outputs: the softmax of 1 "
                "output is always 1 and its gradient 0; use a Sigmoid output layer "
                "for 1 output"
            )
        if getattr(loss, "from_logits", False) and isinstance(last, Softmax | Sigmoid):
            layer = type(last).__name__
            mapping = "softmax" if isinstance(loss, CrossEntropy) else "sigmoid"
            raise XpnetError(
                f"the model ends with a {layer} layer but {type(loss).__name__} "
                f"applies the {mapping} itself (from_logits=True): remove the "
                f"{layer} layer (recommended), or use "
                f"{type(loss).__name__}(from_logits=False)"
            )

    def _build(self) -> None:
        for i, layer in enumerate(self.layers):
            if isinstance(layer, Dense):
                following = self.layers[i + 1] if i + 1 < len(self.layers) else None
                default = (
                    "he_normal"
                    if isinstance(following, RELU_LIKE)
                    else "glorot_uniform"
                )
                layer.build(self.backend, self.dtype_name, self._init_rng, default)
            else:
                layer.build(self.backend, self.dtype_name, self._init_rng)
        self.loss.build(self.backend, self.dtype_name)
        first = next(i for i, layer in enumerate(self.layers) if layer.params)
        self.layers[first].needs_input_grad = False
        # Layers before the first one with parameters need no backward pass.
        self._backward_layers = self.layers[first:][::-1]
        self._param_layers = [layer for layer in self.layers if layer.params]
        #: every parameter in one flat buffer, every gradient in another
        self.parameters = Parameters(self._param_layers, self.xp, self.backend.device)
        self._step: StepFn | None = None

    # -- data in and out -------------------------------------------------------
    @on_model_device
    def to_device(self, x: ArrayLike, dtype: str | None = None) -> Array:
        """``x`` as an array of this model's namespace and device.

        Host data (NumPy, lists) is cast on the host and copied once; arrays
        already here are cast only when their dtype differs.
        """
        if self.backend.owns(x):
            if dtype is not None and x.dtype != self.backend.dtype(dtype):
                return self.xp.astype(x, self.backend.dtype(dtype))
            return x
        if array_api_compat.is_array_api_obj(x) and not isinstance(x, list):
            # Another namespace: DLPack where both ends can share a device
            # (e.g. torch CUDA -> CuPy), else through the host, the one exit.
            moved = self.backend.from_dlpack(x)
            if moved is not None:
                return self.to_device(moved, dtype)
            x = _backend.to_numpy(x)
        return self.backend.asarray(x, dtype)

    @on_model_device
    def prepare_inputs(
        self, X: ArrayLike, what: str = "X", check: bool = True
    ) -> Array:
        """``X: (samples, features)`` checked and on the device, in the model's
        dtype (see :func:`xpnet.inputs.prepare_inputs`); ``check=False`` skips
        the scan for NaN/inf."""
        return _inputs.prepare_inputs(self, X, what, check)

    @on_model_device
    def prepare_targets(
        self,
        y: ArrayLike,
        n: int,
        what: str = "y",
        check: bool = True,
        task: str | None = None,
    ) -> tuple[Array, Array | None, str]:
        """``(targets on the device, integer labels for accuracy, task)``; see
        :func:`xpnet.inputs.prepare_targets`."""
        return _inputs.prepare_targets(self, y, n, what, check, task)

    def restore_task(self, config: dict[str, Any]) -> None:
        """Take ``task`` and ``target_ndim`` from a saved :meth:`config`; configs
        saved before they were recorded are classifiers."""
        task = config.get("task", "classification")
        ndim = config.get("target_ndim")
        if task not in (None, "classification", "regression") or ndim not in (
            None,
            1,
            2,
        ):
            raise XpnetError(
                f"unknown task {task!r} with target_ndim {ndim!r} in the architecture"
            )
        self.task, self.target_ndim = task, ndim

    # -- forward and backward --------------------------------------------------
    def forward(self, x: Array) -> Array:
        """Raw network outputs ``(batch, out_features)`` on the device."""
        for layer in self.layers:
            x = layer.forward(x)
        return x

    __call__ = forward

    def backward(
        self, grad: Array, on_layer: Callable[[Layer], None] | None = None
    ) -> None:
        """Backpropagate ``dL/dout``; fills every layer's ``grads``, calling
        ``on_layer(layer)`` as soon as a layer's are final."""
        for layer in self._backward_layers:
            grad = layer.backward(grad)
            if on_layer is not None:
                on_layer(layer)

    @on_model_device
    def train_step(self, xb: Array, yb: Array) -> tuple[Array, Array]:
        """One update on a batch; returns (loss, outputs), both on the device.

        The step is :meth:`step_function`'s, built once.
        """
        return self.step_function()(xb, yb)

    def step_function(self) -> StepFn:
        """The training step (:func:`xpnet.training.make_train_step`'s: the
        backend's own, or the generic :class:`~xpnet.training.TrainStep`),
        built once. Callers run it with the device current (``fit`` does)."""
        if self._step is None:
            self._step = make_train_step(self)
        return self._step

    # -- training and inference ------------------------------------------------
    def fit(
        self,
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
        communicator: Communicator | None = None,
        sample_weight: ArrayLike | None = None,
    ) -> History:
        """Train for ``epochs`` passes over ``X: (samples, features)``.

        ``y``: integer labels ``(samples,)`` or targets ``(samples, outputs)``;
        ``sample_weight``: one non-negative weight per row ``(samples,)``, or
        None: each batch's loss (and the epoch's) is then the weighted mean,
        normalised by the batch's weight sum (see :mod:`xpnet.losses`); one
        process only, not with ``validation_split``.
        Each epoch draws a fresh permutation from the model's host RNG (made
        once per epoch, copied to the device once), gathers the epoch's X and
        targets in that order once (device memory: one more copy of X) and
        visits every sample, the last partial batch included. The epoch's
        ``loss`` is the mean over its batches of the loss each batch had before
        its update, as the step computed it.

        ``callbacks``: a list of :class:`xpnet.callbacks.Callback` objects, or
        one (Keras style:
        ``on_train_begin/end``, ``on_epoch_begin/end``, ``on_batch_end``;
        e.g. :class:`~xpnet.callbacks.EarlyStopping`,
        :class:`~xpnet.callbacks.ModelCheckpoint`); one that sets
        ``model.stop_training = True`` ends training after that epoch (the
        history's ``stop_reason`` then says why). The older hooks remain:
        ``on_batch(samples_done)`` after each step with a host integer (it
        must not read device arrays), ``on_epoch_end(record)`` after each
        epoch.

        Validation (the ``val_loss``/``val_accuracy`` of the history, and the
        divergence check on the validation loss): ``validation_data=(Xv, yv)``,
        or ``validation_split=F`` (0 < F < 1) to hold out about that fraction
        of ``X, y`` and train on the rest: stratified by class for class
        labels, uniformly random for other targets, drawn from the model's
        ``seed`` (its own stream), so every call with the same seed and data
        holds out the same rows. Not both.

        ``verbose`` as in Keras: 0 silent (the default), 1 a progress bar on
        stderr when it is a terminal (``epoch 3/10``, running loss and
        accuracy, redrawn at most 4 times a second by wall clock, one device
        read per redraw and none between) and a line per epoch on stdout, 2 a
        line per epoch. ``progress``: a :class:`xpnet.progress.Progress` to use
        instead.

        ``check_inputs=False`` skips the one-off scans for NaN/inf and labels out
        of range (a pass over the data and a read-back per call), for callers
        that call ``fit`` repeatedly on data they already validated (like
        scikit-learn's ``check_input``); shapes are always checked.

        The first ``fit`` fixes ``model.task`` from ``y`` (see
        :class:`Sequential`); for a regressor the history's accuracies are
        ``None``.

        Divergence: a reference loss is measured on the first batch before
        its update (at least 256, at most 1024 samples of the first epoch's
        order; from the first step's own outputs when ``batch_size >= 256``,
        else one forward pass and one read-back): the larger of the model's
        loss there and the loss of all-zero outputs (``ln K`` for K-class
        cross-entropy on logits, ``ln 2`` for BCE on logits, half the mean
        squared target norm for MSE), and at least 0.01, so that a start
        near 0 (an already trained model, zero targets) cannot make the limit
        tiny. After each epoch, before
        ``on_epoch_end`` (so a callback that saves checkpoints never saves a
        diverged epoch), fit raises
        :class:`~xpnet.errors.DivergenceError` when the epoch's mean loss is
        NaN/inf or more than 100x the reference loss, any weight is NaN/inf,
        the epoch's final weights give a NaN/inf loss on the reference
        samples, or the validation loss is NaN/inf. The model then holds the diverged
        weights and counts that epoch in ``epochs_trained``.

        Data-parallel: every rank (e.g. of ``mpiexec -n N python script.py``)
        calls ``fit`` with the same data and options and ``communicator=
        xpnet.distributed.MPICommunicator()``. ``batch_size`` is then the
        global batch: each rank computes its share of every batch, one
        all-reduce per step sums the gradients, and N ranks follow the
        trajectory of one process (to rounding). At the start rank 0's
        weights are broadcast and the ranks' options and data compared
        (:class:`~xpnet.distributed.DistributedError` on every rank when they
        differ); loss, accuracy and validation are computed over all ranks.
        """
        return _fit(
            self,
            X,
            y,
            epochs,
            batch_size,
            validation_data=validation_data,
            validation_split=validation_split,
            shuffle=shuffle,
            callbacks=callbacks,
            on_batch=on_batch,
            on_epoch_end=on_epoch_end,
            check_inputs=check_inputs,
            verbose=verbose,
            progress=progress,
            communicator=communicator,
            sample_weight=sample_weight,
        )

    @on_model_device
    def weights_finite(self) -> bool:
        """Whether every parameter is finite (one pass, one read-back)."""
        return _inputs.finite(self, self.parameters.flat)

    @on_model_device
    def read_floats(self, *scalars: Array) -> list[float]:
        """0-d device arrays as host floats, in one read-back (it also waits
        for the device)."""
        stacked = self.xp.stack([self.xp.astype(v, self.dtype) for v in scalars])
        return [float(v) for v in _backend.to_numpy(stacked)]

    @on_model_device
    def evaluate(
        self, X: ArrayLike, y: ArrayLike, batch_size: int = 1024
    ) -> dict[str, Any]:
        """Mean loss and accuracy over ``X: (samples, features)``.

        Returns ``{"loss": float, "accuracy": float | None}``; the accuracy is
        ``None`` for a regressor. ``y`` must be of the kind the model was fitted
        on (see :class:`Sequential`).
        """
        batch_size = check_count("batch_size", batch_size, minimum=1)
        X = self.prepare_inputs(X)
        y, labels, _ = self.prepare_targets(y, X.shape[0], task=self.task)
        if not self.finite_outputs:
            return self.evaluate_prepared(X, y, labels, batch_size)
        with self.backend.quiet_float_errors():
            result = self.evaluate_prepared(X, y, labels, batch_size)
        if not math.isfinite(result["loss"]):
            raise XpnetError(_inputs.non_finite_outputs(f"loss {result['loss']}"))
        return result

    @on_model_device
    def evaluate_prepared(
        self, X: Array, y: Array, labels: Array | None, batch_size: int = 1024
    ) -> dict[str, Any]:
        """:meth:`evaluate` on arrays from :meth:`prepare_inputs` and
        :meth:`prepare_targets` (no checks, no copies)."""
        xp = self.xp
        n = X.shape[0]
        loss_sum = xp.zeros((), dtype=self.dtype, device=self.backend.device)
        correct = xp.zeros((), dtype=xp.int64, device=self.backend.device)
        for lo in range(0, n, batch_size):
            hi = min(lo + batch_size, n)
            out = self.forward(X[lo:hi, ...])
            loss_sum = loss_sum + self.loss(out, y[lo:hi, ...]) * (hi - lo)
            if labels is not None:
                correct = correct + self.loss.correct(out, labels[lo:hi])
        return {
            "loss": float(loss_sum) / n,
            "accuracy": int(correct) / n if labels is not None else None,
        }

    def predict_proba(self, X: ArrayLike, batch_size: int = 1024) -> HostArray:
        """Probabilities ``(samples, outputs)`` as a host NumPy array.

        Softmax of the logits for cross-entropy, sigmoid for BCE on logits.
        For MSE (and the losses with ``from_logits=False``), the model's
        outputs as they are, head included: with a Sigmoid head (the classic
        sigmoid-MSE classifier) each value lies in [0, 1] and estimates
        ``P(class k | x)`` on its own, since the squared error to one-hot
        targets (the Brier score) is smallest at the class probabilities;
        the rows are not normalised, so they need not sum to 1 (like BCE's
        one-vs-rest outputs). With MSE on a linear head the values are
        unbounded scores. The arg-max is always :meth:`predict`'s class.
        Classifiers only (and models not fitted yet).
        """
        if self.task == "regression":
            raise XpnetError(
                "predict_proba is for classifiers, and this model is a regressor "
                "(fitted on float targets): use predict for its values"
            )
        return _backend.to_numpy(self._probabilities(X, batch_size))

    @on_model_device
    def predict(self, X: ArrayLike, batch_size: int = 1024) -> HostArray:
        """Predictions for ``X: (samples, features)`` as a host NumPy array.

        A classifier (or a model not fitted yet) returns class labels
        ``(samples,)`` (int64): the arg-max, or ``probability > 0.5`` for one
        output. A regressor returns its values mapped as the loss maps outputs
        (identity for MSE, sigmoid for BCE on logits): ``(samples,)`` when the
        targets given to ``fit`` were 1-D, else ``(samples, outputs)``.
        """
        out = self._probabilities(X, batch_size)
        if self.task == "regression":
            values = _backend.to_numpy(out)
            return values[:, 0] if self.target_ndim == 1 else values
        xp = self.xp
        if out.shape[1] == 1:
            labels = xp.astype(out[:, 0] > 0.5, xp.int64)
        else:
            labels = xp.argmax(out, axis=1)
        return _backend.to_numpy(labels)

    @on_model_device
    def _probabilities(
        self, X: ArrayLike, batch_size: int, check: bool = True
    ) -> Array:
        """Probabilities (classifier) or values (regressor) ``(n, outputs)`` of
        ``X: (n, features)`` on the device, ``batch_size`` rows at a time;
        ``check=False`` skips the scan of X's values (already validated)."""
        batch_size = check_count("batch_size", batch_size, minimum=1)
        X = self.prepare_inputs(X, check=check)
        n = X.shape[0]
        parts = []
        with self.backend.quiet_float_errors(self.finite_outputs):
            for lo in range(0, n, batch_size):
                out = self.forward(X[lo : min(lo + batch_size, n), ...])
                parts.append(self.loss.probabilities(out))
            out = parts[0] if len(parts) == 1 else self.xp.concat(parts, axis=0)
        if self.finite_outputs and not _inputs.finite(self, out):
            raise XpnetError(_inputs.non_finite_outputs("NaN or infinite outputs"))
        return out

    # -- state -----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Parameters as host NumPy arrays, keyed ``"<layer index>.<name>"``."""
        return {
            f"{i}.{name}": _backend.to_numpy(value, copy=True)
            for i, layer in enumerate(self.layers)
            for name, value in layer.params.items()
        }

    @on_model_device
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Copy parameters (host or device arrays) into the model, checking shapes."""
        expected = {
            f"{i}.{name}": tuple(value.shape)
            for i, layer in enumerate(self.layers)
            for name, value in layer.params.items()
        }
        missing = sorted(set(expected) - set(state))
        extra = sorted(set(state) - set(expected))
        if missing or extra:
            raise XpnetError(
                f"state does not fit this model: missing {missing or 'nothing'}, "
                f"unexpected {extra or 'nothing'}"
            )
        for key, shape in expected.items():
            got = tuple(getattr(state[key], "shape", ()))
            if got != shape:
                raise XpnetError(
                    f"state {key} has shape {got}, the model needs {shape}"
                )
        keys = {id(layer): i for i, layer in enumerate(self.layers)}
        # Always a copy: training must never write into the caller's arrays.
        self.parameters.load(
            [
                self.backend.asarray(
                    _backend.to_numpy(state[f"{keys[id(slot.layer)]}.{slot.name}"]),
                    self.dtype_name,
                )
                for slot in self.parameters.slots
            ]
        )

    def config(self) -> dict[str, Any]:
        """The architecture as JSON-ready data (for checkpoints)."""
        return {
            "layers": [
                {"type": type(layer).__name__, **layer.config()}
                for layer in self.layers
            ],
            "loss": {"type": type(self.loss).__name__, **self.loss.config()},
            "dtype": self.dtype_name,
            "task": self.task,
            "target_ndim": self.target_ndim,
        }

    @property
    def output_activation(self) -> str:
        """The head after the last Dense layer by name: ``"identity"`` when there
        is none (logits), else e.g. ``"sigmoid"`` (``"+"``-joined if several)."""
        last = max(i for i, x in enumerate(self.layers) if isinstance(x, Dense))
        head = [x for x in self.layers[last + 1 :] if not isinstance(x, Identity)]
        return "+".join(activation_name(x) for x in head) or "identity"

    def summary(self) -> str:
        """A few lines: each layer, its output width and parameter count."""
        lines = []
        total = 0
        for layer in self.layers:
            count = sum(math.prod(p.shape) for p in layer.params.values())
            total += count
            lines.append(f"{layer!r:<48} params={count}")
        lines.append(
            f"total params={total}  loss={self.loss!r}  "
            f"optimizer={self.optimizer!r}  {self.backend.describe()}  "
            f"dtype={self.dtype_name}"
        )
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"Sequential({self.layers!r})"

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Pickle and ``copy.deepcopy`` (and ``copy.copy``, which is then a deep
        copy too) go through host data and rebuild the model, re-resolving its
        namespace by backend name and device: see :mod:`xpnet.model_pickle`."""
        from .model_pickle import reduce_model

        return reduce_model(self)


LAYER_TYPES: dict[str, type[Layer]] = {
    "Dense": Dense,
    **{cls.__name__: cls for cls in ACTIVATIONS.values()},
}


def layer_from_config(config: dict[str, Any]) -> Layer:
    """Rebuild a layer from ``{"type": name, **arguments}``."""
    config = dict(config)
    kind = config.pop("type")
    if kind not in LAYER_TYPES:
        raise XpnetError(f"unknown layer type {kind!r} in saved architecture")
    return LAYER_TYPES[kind](**config)


def mlp(
    sizes: Sequence[int],
    activation: str = "relu",
    *,
    output_activation: str | None = None,
    init: str = "auto",
    **kwargs: Any,
) -> Sequential:
    """A multilayer perceptron from layer sizes, e.g. ``mlp([784, 256, 10])``.

    Hidden layers use ``activation``; the last Dense layer is followed by
    ``output_activation`` (default: none, i.e. logits for the fused
    cross-entropy or BCE-with-logits losses; ``"sigmoid"`` or ``"softmax"``
    give outputs in [0, 1] for ``loss="mse"``). ``init`` is every Dense
    layer's weight initialiser (default ``"auto"``: He-normal before ReLU-like
    activations, Glorot-uniform otherwise). Other keyword arguments go to
    :class:`Sequential` (``loss``, ``optimizer``, ``device``, ``dtype``, ``seed``).

    The classic sigmoid-MSE net of the from-scratch texts (784-16-16-16-10,
    ReLU, He init, SGD lr 0.1 with inverse-time decay 0.001 per step)::

        mlp([784, 16, 16, 16, 10], "relu", output_activation="sigmoid",
            init="he_normal", loss="mse",
            optimizer=SGD(lr=InverseTimeDecay(0.1, 0.001), momentum=0.0))
    """
    sizes = list(sizes)
    if len(sizes) < 2:
        raise XpnetError(f"mlp needs at least input and output sizes, got {sizes}")
    get_activation(activation)  # validate the names before building anything
    head = None if output_activation is None else get_activation(output_activation)
    layers: list[Layer] = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:], strict=False)):
        layers.append(Dense(a, b, init=init))
        if i < len(sizes) - 2:
            layers.append(get_activation(activation))
    if head is not None and not isinstance(head, Identity):
        layers.append(head)
    return Sequential(layers, **kwargs)


__all__ = ["History", "Identity", "Sequential", "Softmax", "layer_from_config", "mlp"]
