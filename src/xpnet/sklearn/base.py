"""What :class:`~xpnet.sklearn.MLPClassifier` and
:class:`~xpnet.sklearn.MLPRegressor` share: the xpnet model behind them, the
fit procedure (scikit-learn's, step by step: validation, first pass or warm
start, then the L-BFGS or the stochastic solver), the fitted weights
``coefs_``/``intercepts_`` (readable and settable) and pickling.

A fitted estimator keeps an :class:`xpnet.Sequential` on its device; its
pickle holds host NumPy data only (weights, optimizer state, shuffling RNG),
from which the model is rebuilt on first use.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import scipy.sparse
from sklearn.utils import check_random_state
from sklearn.utils.validation import (
    _check_sample_weight,
    check_is_fitted,
    column_or_1d,
    validate_data,
)

from ..backend import Backend, resolve
from ..errors import DeviceError, XpnetError
from ..losses import Loss
from ..model import Sequential, layer_from_config
from ..resumable import TrainingState
from . import arrays
from .lbfgs import fit_lbfgs
from .params import STOCHASTIC_SOLVERS, MLPParams
from .stopping import train_stochastic

__all__ = ["PREDICT_BATCH", "BaseMLP"]

#: rows per forward pass in predict (bounds the device memory of outputs)
PREDICT_BATCH = 1024


class BaseMLP(MLPParams):
    """The model, the fit procedure, the weights and pickling; the subclasses
    say what the targets are (:meth:`_targets`), which loss the output
    activation means (:meth:`_loss`) and how a validation score is computed."""

    _is_classifier = False

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.array_api_support = True
        tags.input_tags.sparse = True
        return tags

    # -- to be provided by the subclasses --------------------------------------
    def _targets(
        self, y: np.ndarray, classes: Any, incremental: bool, first_pass: bool
    ) -> tuple[np.ndarray, int]:
        raise NotImplementedError

    def _loss(self) -> Loss:
        raise NotImplementedError

    def _validation_score(
        self, model: Sequential, X: Any, y: np.ndarray, weight: np.ndarray | None
    ) -> float:
        raise NotImplementedError

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
            loss=self._loss(),
            optimizer=self._optimizer(self.__dict__.get("_learning_rate")),
            device=backend,
            dtype=dtype,
            seed=seed,
        )

    def _backend_for(self, X: Any) -> Backend:
        if self.device is None and self.backend is None:
            return arrays.backend_for(X) or resolve("cpu")
        return resolve(self.device or "cpu", self.backend)

    def _fitted(self) -> bool:
        return "_model" in vars(self) or "_saved" in vars(self)

    def _get_model(self) -> Sequential:
        """The fitted model, rebuilt from its pickled host state on first use
        after unpickling."""
        model = self.__dict__.get("_model")
        if model is not None:
            return model
        if "_saved" not in vars(self):
            check_is_fitted(self, "_model")
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

    def xpnet_model(self) -> Sequential:
        """The fitted network as an :class:`xpnet.Sequential` (on its device;
        the estimator's own, not a copy): for ``xpnet.save``,
        ``xpnet.export_onnx`` or xpnet's own ``fit``. Its outputs are logits
        (log-means for ``loss="poisson"``); its ``predict_proba`` maps them
        as the estimator's does, one column per output."""
        if not self._fitted():
            check_is_fitted(self, "_model")
        return self._get_model()

    # -- the weights -----------------------------------------------------------
    def _weights(self, kind: str) -> list[np.ndarray]:
        if not self._fitted():
            check_is_fitted(self, "_model")  # NotFittedError, an AttributeError
        weights = self._get_model().state_dict()
        return [v for k, v in weights.items() if k.endswith("." + kind)]

    def _set_weights(self, kind: str, values: Any) -> None:
        """Write ``values`` (one array per layer) into the model's weights
        (``kind="W"``) or biases (``"b"``)."""
        if not self._fitted():
            raise XpnetError(
                f"{type(self).__name__} builds its network in fit: set coefs_ and "
                "intercepts_ on a fitted estimator (e.g. after partial_fit)"
            )
        model = self._get_model()
        state = model.state_dict()
        keys = [k for k in state if k.endswith("." + kind)]
        values = list(values)
        if len(values) != len(keys):
            raise XpnetError(
                f"the network has {len(keys)} layers, got {len(values)} arrays"
            )
        for key, value in zip(keys, values, strict=True):
            state[key] = np.asarray(arrays.host(value), dtype=np.float64)
        model.load_state_dict(state)

    @property
    def coefs_(self) -> list[np.ndarray]:
        """Weight matrices ``(fan_in, fan_out)``, one per layer, as NumPy
        copies; assign a list of arrays of the same shapes to change them."""
        return self._weights("W")

    @coefs_.setter
    def coefs_(self, values: Any) -> None:
        self._set_weights("W", values)

    @property
    def intercepts_(self) -> list[np.ndarray]:
        """Bias vectors ``(fan_out,)``, one per layer, as NumPy copies;
        assignable as :attr:`coefs_`."""
        return self._weights("b")

    @intercepts_.setter
    def intercepts_(self, values: Any) -> None:
        self._set_weights("b", values)

    # -- fitting ---------------------------------------------------------------
    def _fit(
        self,
        X: Any,
        y: Any,
        sample_weight: Any = None,
        *,
        incremental: bool,
        classes: Any = None,
    ) -> Any:
        """scikit-learn's ``_fit``: validate, set up on the first pass (or
        go on from the fitted weights with ``warm_start`` and in
        ``partial_fit``), run the solver, refuse non-finite weights."""
        self._validate_params()
        first_pass = not self._fitted() or (not self.warm_start and not incremental)
        X, y = validate_data(
            self,
            X,
            y,
            reset=first_pass,
            accept_sparse=["csr", "csc"],
            dtype=arrays.float_dtypes(X),
            multi_output=True,
            y_numeric=not self._is_classifier,
        )
        if scipy.sparse.issparse(X):
            X = X.toarray()  # the whole matrix, once: xpnet trains on dense rows
        weight = _sample_weight(sample_weight, X)
        method = "partial_fit" if incremental else "fit"
        if not first_pass:
            self._check_namespace(X, method)
        y = arrays.host(y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        targets, n_outputs = self._targets(y, classes, incremental, first_pass)
        random_state = check_random_state(self.random_state)
        if first_pass:
            model = self._first_model(X, n_outputs, random_state)
        else:
            model = self._get_model()
            if model.out_features != n_outputs:
                raise XpnetError(
                    f"y has {n_outputs} output(s) but {type(self).__name__} was "
                    f"fitted on {model.out_features}: pass targets of the same shape"
                )
        self._model = model
        if self.solver == "lbfgs":
            self.n_iter_, self.loss_ = fit_lbfgs(self, model, X, targets, weight)
        else:
            train_stochastic(
                self, model, X, targets, y, weight, random_state, incremental
            )
        if not model.weights_finite():
            raise XpnetError(
                "Solver produced non-finite parameter weights. The input data may "
                "contain large values and need to be preprocessed."
            )
        return self

    def _first_model(
        self, X: Any, n_outputs: int, random_state: np.random.RandomState
    ) -> Sequential:
        """A fresh network and the fitted attributes of a first pass."""
        self.__dict__.pop("_saved", None)
        self.__dict__.pop("_learning_rate", None)
        sizes = [X.shape[1], *self._hidden_sizes(), n_outputs]
        self.n_outputs_ = n_outputs
        self.n_layers_ = len(sizes)
        self.n_iter_ = 0
        self.t_ = 0
        dtype = self.dtype or arrays.float_name(X)
        model = self._new_model(
            self._layers(X.shape[1], n_outputs),
            self._backend_for(X),
            dtype,
            self._seed(),
        )
        if self.init == "sklearn":
            model.load_state_dict(self._initial_weights(sizes, random_state))
        self._fit_namespace = arrays.namespace_key(X)
        for name in ("loss_curve_", "best_loss_", "validation_scores_"):
            self.__dict__.pop(name, None)
        self.__dict__.pop("best_validation_score_", None)
        if self.solver in STOCHASTIC_SOLVERS:
            self._start_tracking(model)
        return model

    def _start_tracking(self, model: Sequential) -> None:
        """The records of the stochastic solvers (scikit-learn's
        ``_initialize``): the loss curve and the counters of the stopping
        rule, for the loss or, with early stopping, the validation score."""
        self.loss_curve_: list[float] = []
        self._no_improvement_count = 0
        # The weights early stopping restores when no epoch improves on them.
        self._best_weights = model.state_dict()
        if self.early_stopping:
            self.validation_scores_: list[float] | None = []
            self.best_validation_score_: float | None = -math.inf
            self.best_loss_: float | None = None
        else:
            self.validation_scores_ = None
            self.best_validation_score_ = None
            self.best_loss_ = math.inf

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
        ``(samples, outputs)`` or values ``(samples, outputs)``."""
        if not self._fitted():
            check_is_fitted(self, "_model")
        X = validate_data(
            self,
            X,
            reset=False,
            accept_sparse=["csr", "csc"],
            dtype=arrays.float_dtypes(X),
        )
        if scipy.sparse.issparse(X):
            X = X.toarray()
        self._check_namespace(X, method)
        return forward(self._get_model(), X), X


def _sample_weight(sample_weight: Any, X: Any) -> np.ndarray | None:
    """Host float64 weights ``(samples,)``, or ``None`` for none or all ones
    (the unweighted path: the same numbers, fewer operations). Negative
    weights are refused (scikit-learn's MLP takes them; a weighted mean with
    negative weights is no loss to minimise)."""
    if sample_weight is None:
        return None
    rows = np.empty((X.shape[0], 1))
    weight = _check_sample_weight(
        arrays.host(sample_weight), rows, dtype=np.float64, ensure_non_negative=True
    )
    return None if np.all(weight == 1.0) else weight


def forward(model: Sequential, X: Any) -> Any:
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
