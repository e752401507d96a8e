"""``MLPClassifier`` and ``MLPRegressor``: scikit-learn estimators that train an
:func:`xpnet.mlp` with :meth:`xpnet.Sequential.fit`.

Parameters follow ``sklearn.neural_network.MLPClassifier``/``MLPRegressor``
(names and defaults) where xpnet has the feature; what differs:

- ``solver``: ``"adam"`` (default), ``"sgd"`` or ``"adamw"``; no ``"lbfgs"``.
- ``alpha`` means what it means in scikit-learn: an L2 penalty
  ``0.5 * alpha * ||W||^2 / batch_size`` added to each batch's mean loss
  (weights, not biases), i.e. xpnet's ``weight_decay = alpha / batch_size``
  (for ``"adamw"`` the same coefficient, decoupled). The last, partial batch
  of an epoch uses the full ``batch_size``; ``loss_curve_`` holds the data
  loss without the penalty.
- learning rate: ``learning_rate_init``, constant, or ``lr / (1 + lr_decay *
  step)`` per update with ``lr_decay > 0`` (``xpnet train --lr-decay``), in
  place of scikit-learn's ``learning_rate``/``power_t``.
- ``device``/``backend``: where xpnet computes (see :func:`xpnet.resolve`).
  ``None`` for both: on the CPU with NumPy, or, under scikit-learn's array-API
  dispatch, in the namespace and on the device of ``X`` (torch CPU/CUDA,
  CuPy, array-api-strict). ``dtype``: the precision of the computation,
  ``"float32"``, ``"float64"`` or ``None`` (default): ``X``'s, as scikit-learn
  computes (float32 input in float32, float64 and integer input in float64);
  outputs come in ``X``'s float dtype (float64 for integer input).
- The classifier is a softmax over one output per class (also for 2
  classes), with cross-entropy; the regressor has identity outputs with
  squared error (``0.5 * mean squared error``, as scikit-learn's).

Inputs: NumPy arrays, lists, pandas, sparse-free array-likes; torch, CuPy and
array-api-strict arrays under ``sklearn.config_context(array_api_dispatch=
True)`` (whose outputs then come back in the namespace and on the device of
``X``; without dispatch, inputs are converted to NumPy). Fitted estimators
pickle their weights, optimizer state and shuffling RNG as host NumPy data,
never modules or device arrays; an unpickled estimator rebuilds its model on
first use (on the CPU, with a warning, when the device it was fitted on is
missing).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import array_api_compat
import numpy as np
from sklearn.base import ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import r2_score
from sklearn.model_selection import train_test_split
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from ..backend import Backend, resolve, to_numpy
from ..errors import DeviceError, XpnetError
from ..losses import CrossEntropy, Loss, MeanSquaredError
from ..model import Sequential, layer_from_config
from ..resumable import TrainingState
from . import arrays
from .params import MLPParams

__all__ = ["MLPClassifier", "MLPRegressor"]

#: rows per forward pass in predict (bounds the device memory of outputs)
PREDICT_BATCH = 1024


class _Converged(Exception):
    """Raised from fit's epoch callback when training stops improving."""


class _BaseMLP(MLPParams):
    """What the classifier and the regressor share: the model, the training
    loop, pickling and prediction; the parameters are :class:`MLPParams`."""

    _loss_type: type[Loss] = Loss
    _multi_output = False
    _out_activation = ""

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.array_api_support = True
        return tags

    # -- the model -------------------------------------------------------------
    def _new_model(
        self,
        layers: list[dict[str, Any]],
        backend: Backend,
        dtype: str,
        seed: int | None,
    ) -> Sequential:
        return Sequential(
            [layer_from_config(config) for config in layers],
            loss=self._loss_type(),
            optimizer=self._optimizer(),
            device=backend,
            dtype=dtype,
            seed=seed,
        )

    def _backend_for(self, X: Any) -> Backend:
        if self.device is None and self.backend is None:
            return arrays.backend_for(X) or resolve("cpu")
        return resolve(self.device or "cpu", self.backend)

    def _get_model(self) -> Sequential:
        """The fitted model, rebuilt from its pickled host state on first use
        after unpickling."""
        model = self.__dict__.get("_model")
        if model is not None:
            return model
        check_is_fitted(self)
        saved = self._saved
        try:
            backend = resolve(*saved["backend"])
        except DeviceError as exc:
            warnings.warn(
                f"{type(self).__name__}: the device it was fitted on is not "
                f"usable here ({exc}); running on the CPU with NumPy",
                stacklevel=3,
            )
            backend = resolve("cpu")
        model = self._new_model(saved["layers"], backend, saved["dtype"], seed=None)
        same_optimizer = type(model.optimizer).__name__ == saved["optimizer_type"]
        saved["training"].restore(model, optimizer=same_optimizer)
        model.restore_task(saved)
        self._model = model
        del self._saved
        return model

    def __getstate__(self) -> dict[str, Any]:
        # A copy: BaseEstimator hands back the instance's own __dict__.
        state = dict(super().__getstate__())
        model = state.pop("_model", None)
        if model is not None:
            state["_saved"] = _host_state(model)
        return state

    @property
    def coefs_(self) -> list[np.ndarray]:
        """Weight matrices ``(fan_in, fan_out)``, one per layer, as NumPy."""
        weights = self._get_model().state_dict()
        return [v for k, v in weights.items() if k.endswith(".W")]

    @property
    def intercepts_(self) -> list[np.ndarray]:
        """Bias vectors ``(fan_out,)``, one per layer, as NumPy."""
        weights = self._get_model().state_dict()
        return [v for k, v in weights.items() if k.endswith(".b")]

    # -- training --------------------------------------------------------------
    def _fit(self, X: Any, y: Any, *, incremental: bool, classes: Any = None) -> Any:
        self._validate_params()
        if incremental and self.early_stopping:
            raise XpnetError(
                "partial_fit does not support early_stopping=True: use fit, or set "
                "early_stopping=False"
            )
        fitted = "loss_curve_" in vars(self)
        keep = fitted and (incremental or self.warm_start)
        X, y = validate_data(
            self,
            X,
            y,
            reset=not keep,
            dtype=arrays.float_dtypes(X),
            multi_output=self._multi_output,
            y_numeric=self._multi_output,
        )
        method = "partial_fit" if incremental else "fit"
        if keep:
            self._check_namespace(X, method)
        targets, n_outputs = self._targets(arrays.host(y), classes, incremental, keep)
        seed = self._seed()
        if not keep:
            layers = self._layers(X.shape[1], n_outputs)
            dtype = self.dtype or arrays.float_name(X)
            model = self._new_model(layers, self._backend_for(X), dtype, seed)
            self._start(n_outputs)
            self._fit_namespace = arrays.namespace_key(X)
            self.__dict__.pop("_saved", None)
        elif not incremental:
            # warm_start: the weights and the shuffling go on, the optimizer
            # starts afresh (as scikit-learn's), from today's parameters.
            old = self._get_model()
            layers = old.config()["layers"]
            model = self._new_model(layers, old.backend, old.dtype_name, seed=None)
            TrainingState.of(old).restore(model, optimizer=False)
            model.restore_task(old.config())
            if self.early_stopping != (self.validation_scores_ is not None):
                self._start_tracking()
        else:
            model = self._get_model()
        self._model = model
        validation = None
        if self.early_stopping and not incremental:
            X, targets, validation = self._split(X, targets, seed)
        # scikit-learn's batch size and penalty: on the rows trained on
        size = 200 if self.batch_size == "auto" else int(self.batch_size)
        batch = min(size, X.shape[0])
        model.optimizer.weight_decay = self.alpha / batch
        epochs = 1 if incremental else self.max_iter
        self._train(model, X, targets, epochs, batch, validation, incremental)
        return self

    def _start(self, n_outputs: int) -> None:
        """The fitted attributes of a fresh fit, before its first epoch."""
        self.n_outputs_ = n_outputs
        self.out_activation_ = self._out_activation
        self.n_layers_ = len(self._hidden_sizes()) + 2
        self.n_iter_ = 0
        self.t_ = 0
        self.loss_curve_: list[float] = []
        self.loss_ = math.nan
        self._start_tracking()

    def _start_tracking(self) -> None:
        """The counters of the stopping rule, for the loss or, with early
        stopping, the validation score."""
        self._no_improvement_count = 0
        if self.early_stopping:
            self.validation_scores_: list[float] | None = []
            self.best_validation_score_: float | None = -math.inf
            self.best_loss_: float | None = None
        else:
            self.validation_scores_ = None
            self.best_validation_score_ = None
            self.best_loss_ = math.inf

    def _split(
        self, X: Any, targets: np.ndarray, seed: int | None
    ) -> tuple[Any, np.ndarray, tuple[Any, np.ndarray]]:
        """Hold out ``validation_fraction`` of the rows for early stopping
        (stratified for the classifier), as scikit-learn's MLP does."""
        rows = np.arange(X.shape[0])
        stratify = targets if isinstance(self, ClassifierMixin) else None
        train, val = train_test_split(
            rows,
            test_size=self.validation_fraction,
            random_state=seed,
            stratify=stratify,
        )
        if len(val) < 2:
            raise XpnetError(
                f"The validation set is too small ({len(val)} rows): increase "
                "'validation_fraction' or the size of your dataset"
            )
        held_out = (arrays.take_rows(X, val), targets[val])
        return arrays.take_rows(X, train), targets[train], held_out

    def _train(
        self,
        model: Sequential,
        X: Any,
        targets: np.ndarray,
        epochs: int,
        batch: int,
        validation: tuple[Any, np.ndarray] | None,
        incremental: bool,
    ) -> None:
        """``epochs`` passes of :meth:`Sequential.fit`, stopped once the loss
        (or, with early stopping, the validation score) has not improved by
        ``tol`` for more than ``n_iter_no_change`` epochs."""
        n = X.shape[0]
        best_weights: dict[str, np.ndarray] = {}

        def on_epoch_end(record: dict[str, Any]) -> None:
            loss = record["loss"]
            self.n_iter_ += 1
            self.t_ += n
            self.loss_curve_.append(loss)
            self.loss_ = loss
            if self.verbose:
                print(f"Iteration {self.n_iter_}, loss = {loss:.8f}")
            if incremental:
                return
            score = None
            if validation is not None:
                score = self._validation_score(model, *validation)
                if self.verbose:
                    print(f"Validation score: {score:f}")
                if score > self.best_validation_score_:
                    best_weights.update(model.state_dict())
            if self._stalled(loss, score):
                raise _Converged

        try:
            model.fit(
                X,
                targets,
                epochs=epochs,
                batch_size=batch,
                shuffle=self.shuffle,
                on_epoch_end=on_epoch_end,
            )
        except _Converged:
            if self.verbose:
                what = "Validation score" if validation else "Training loss"
                print(
                    f"{what} did not improve more than tol={self.tol:f} for "
                    f"{self.n_iter_no_change} consecutive epochs. Stopping."
                )
        else:
            if not incremental:
                warnings.warn(
                    f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) "
                    "reached and the optimization hasn't converged yet.",
                    ConvergenceWarning,
                    stacklevel=3,
                )
        if best_weights:
            model.load_state_dict(best_weights)

    def _stalled(self, loss: float, score: float | None) -> bool:
        """Count epochs without improvement (scikit-learn's rule); True when
        there have been more than ``n_iter_no_change`` in a row."""
        if score is not None:
            assert self.validation_scores_ is not None
            assert self.best_validation_score_ is not None
            self.validation_scores_.append(score)
            stalled = score < self.best_validation_score_ + self.tol
            self.best_validation_score_ = max(self.best_validation_score_, score)
        else:
            assert self.best_loss_ is not None
            stalled = loss > self.best_loss_ - self.tol
            self.best_loss_ = min(self.best_loss_, loss)
        self._no_improvement_count = self._no_improvement_count + 1 if stalled else 0
        return self._no_improvement_count > self.n_iter_no_change

    # -- prediction ------------------------------------------------------------
    def _check_namespace(self, X: Any, method: str) -> None:
        """Under array-API dispatch, refuse inputs of another namespace or
        device than fit's (scikit-learn's rule for array-API estimators)."""
        if not arrays.dispatching():
            return
        fitted, given = self._fit_namespace, arrays.namespace_key(X)
        if fitted != given:
            raise XpnetError(
                f"Inputs passed to {type(self).__name__}.{method}() must use the "
                "same namespace and the same device as those passed to fit(): fit "
                f"had {fitted[0]} on {fitted[1]}, {method} got {given[0]} on "
                f"{given[1]}"
            )

    def _outputs(self, X: Any, method: str) -> tuple[Any, Any]:
        """``(outputs on the model's device, validated X)``: probabilities
        ``(samples, classes)`` or values ``(samples, outputs)``."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=arrays.float_dtypes(X))
        self._check_namespace(X, method)
        return _forward(self._get_model(), X), X


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """A multilayer perceptron classifier trained by xpnet; the parameters of
    ``sklearn.neural_network.MLPClassifier`` (see the module docstring for
    what differs) plus ``device``, ``backend``, ``dtype`` and ``lr_decay``.

    Fitted attributes: ``classes_ (n_classes,)`` (NumPy), ``n_features_in_``,
    ``feature_names_in_`` (from a DataFrame), ``loss_curve_`` (mean training
    loss per epoch), ``loss_``, ``n_iter_`` (epochs), ``t_`` (samples seen),
    ``best_loss_``, ``validation_scores_`` and ``best_validation_score_``
    (accuracy on the held-out rows with ``early_stopping``), ``coefs_``,
    ``intercepts_``, ``n_layers_``, ``n_outputs_``, ``out_activation_``.
    """

    _loss_type = CrossEntropy
    _multi_output = False
    _out_activation = "softmax"

    def fit(self, X: Any, y: Any) -> MLPClassifier:
        """Train on ``X: (samples, features)`` and labels ``y: (samples,)``
        for up to ``max_iter`` epochs (from scratch unless ``warm_start``)."""
        return self._fit(X, y, incremental=False)

    def partial_fit(self, X: Any, y: Any, classes: Any = None) -> MLPClassifier:
        """One epoch over ``X, y``; the first call needs ``classes``, every
        label that any call will pass."""
        return self._fit(X, y, incremental=True, classes=classes)

    def _targets(
        self, y: np.ndarray, classes: Any, incremental: bool, keep: bool
    ) -> tuple[np.ndarray, int]:
        """Labels as class indices ``(samples,)`` int64, and the class count;
        sets ``classes_`` on a fresh fit."""
        check_classification_targets(y)
        found = np.unique(y)
        if not keep:
            if incremental and classes is None:
                raise XpnetError(
                    "classes must be passed on the first call to partial_fit: "
                    "every label any call will pass, e.g. classes=np.unique(y)"
                )
            known = found if classes is None else np.unique(arrays.host(classes))
            if len(known) < 2:
                raise XpnetError(
                    f"{type(self).__name__} needs samples of at least 2 classes, "
                    f"got only one class: {known[0]!r}"
                )
            self.classes_ = known
        elif incremental and classes is not None:
            if not np.array_equal(np.unique(arrays.host(classes)), self.classes_):
                raise XpnetError(
                    f"classes={classes!r} is not the same as on the first call to "
                    f"partial_fit, {self.classes_!r}"
                )
        elif not incremental and not np.array_equal(found, self.classes_):
            raise XpnetError(
                "warm_start can only be used where `y` has the same classes as in "
                f"the previous call to fit. Previously got {self.classes_}, `y` "
                f"has {found}"
            )
        unknown = np.setdiff1d(found, self.classes_)
        if len(unknown):
            raise XpnetError(
                f"`y` has classes not in `self.classes_`. `self.classes_` has "
                f"{self.classes_}. 'y' has {found}."
            )
        return np.searchsorted(self.classes_, y).astype(np.int64), len(self.classes_)

    def _validation_score(self, model: Sequential, X: Any, y: np.ndarray) -> float:
        out = _forward(model, X)
        xp = array_api_compat.array_namespace(out)
        return float(np.mean(to_numpy(xp.argmax(out, axis=1)) == y))

    def predict(self, X: Any) -> Any:
        """Class labels ``(samples,)`` from ``classes_``: NumPy, or the
        namespace and device of ``X`` under array-API dispatch."""
        out, X = self._outputs(X, "predict")
        xp = array_api_compat.array_namespace(out)
        return arrays.like(self.classes_[to_numpy(xp.argmax(out, axis=1))], X)

    def predict_proba(self, X: Any) -> Any:
        """Class probabilities ``(samples, n_classes)`` (softmax), in ``X``'s
        float dtype: NumPy, or ``X``'s namespace under array-API dispatch."""
        out, X = self._outputs(X, "predict_proba")
        return arrays.like(out, X, X.dtype)

    def predict_log_proba(self, X: Any) -> Any:
        """The logarithm of :meth:`predict_proba`."""
        out, X = self._outputs(X, "predict_log_proba")
        proba = arrays.like(out, X, X.dtype)
        return array_api_compat.array_namespace(proba).log(proba)


class MLPRegressor(RegressorMixin, _BaseMLP):
    """A multilayer perceptron regressor trained by xpnet, squared-error loss
    on identity outputs; the parameters of
    ``sklearn.neural_network.MLPRegressor`` (see the module docstring for what
    differs) plus ``device``, ``backend``, ``dtype`` and ``lr_decay``.

    ``y``: ``(samples,)`` or ``(samples, outputs)``; ``(samples, 1)`` is
    treated as ``(samples,)`` with a DataConversionWarning. Fitted attributes
    as :class:`MLPClassifier`'s, without ``classes_``; the validation score of
    ``early_stopping`` is R² (scikit-learn's ``r2_score``).
    """

    _loss_type = MeanSquaredError
    _multi_output = True
    _out_activation = "identity"
    #: ndim of the targets given to fit: predict returns (n,) for 1
    _target_ndim: int = 1

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def fit(self, X: Any, y: Any) -> MLPRegressor:
        """Train on ``X: (samples, features)`` and targets ``y`` for up to
        ``max_iter`` epochs (from scratch unless ``warm_start``)."""
        return self._fit(X, y, incremental=False)

    def partial_fit(self, X: Any, y: Any) -> MLPRegressor:
        """One epoch over ``X, y``."""
        return self._fit(X, y, incremental=True)

    def _targets(
        self, y: np.ndarray, classes: Any, incremental: bool, keep: bool
    ) -> tuple[np.ndarray, int]:
        """Float targets ``(samples,)`` or ``(samples, outputs)``."""
        y = np.asarray(y, dtype=np.float64)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        n_outputs = 1 if y.ndim == 1 else y.shape[1]
        if keep and (n_outputs != self.n_outputs_ or y.ndim != self._target_ndim):
            raise XpnetError(
                f"y has shape {y.shape} but {type(self).__name__} was fitted on "
                f"{self.n_outputs_} output(s): pass targets of the same shape"
            )
        self._target_ndim = y.ndim
        return y, n_outputs

    def _validation_score(self, model: Sequential, X: Any, y: np.ndarray) -> float:
        values = to_numpy(_forward(model, X))
        return float(r2_score(y, values[:, 0] if y.ndim == 1 else values))

    def predict(self, X: Any) -> Any:
        """Values ``(samples,)`` (1-D targets) or ``(samples, outputs)``, in
        ``X``'s float dtype: NumPy, or ``X``'s namespace under array-API
        dispatch."""
        out, X = self._outputs(X, "predict")
        values = arrays.like(out, X, X.dtype)
        if self._target_ndim == 1:
            return array_api_compat.array_namespace(values).reshape(values, (-1,))
        return values


def _forward(model: Sequential, X: Any) -> Any:
    """The model's probabilities (classifier) or values (regressor) for
    ``X`` that scikit-learn already validated, on the model's device,
    ``PREDICT_BATCH`` rows at a time."""
    return model._probabilities(X, PREDICT_BATCH, check=False)


def _host_state(model: Sequential) -> dict[str, Any]:
    """Everything needed to rebuild ``model`` and train on, as host data (its
    :class:`~xpnet.resumable.TrainingState` and architecture)."""
    return {
        "layers": model.config()["layers"],
        "dtype": model.dtype_name,
        "optimizer_type": type(model.optimizer).__name__,
        "training": TrainingState.of(model),
        "task": model.task,
        "target_ndim": model.target_ndim,
        "backend": (model.backend.device_name, model.backend.name),
    }
