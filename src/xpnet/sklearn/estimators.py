"""``MLPClassifier`` and ``MLPRegressor``: drop-ins for scikit-learn's
``sklearn.neural_network`` classes of the same names, trained by xpnet (on
the CPU, or on a GPU with ``device="cuda"``).

Every parameter of scikit-learn's estimators is here, with its default and
its meaning (scikit-learn's documentation applies), and so is every fitted
attribute; ``from xpnet.sklearn import MLPClassifier`` in place of
``from sklearn.neural_network import MLPClassifier`` keeps code working. The
network, losses and solvers are scikit-learn's:

- output: softmax with log-loss for multiclass, one logistic output for
  binary, a logistic output per label for multilabel ``y`` (an indicator
  matrix), identity with half the squared error (averaged over outputs) or
  ``exp`` with half the Poisson deviance (``loss="poisson"``) for
  regression;
- initial weights and biases ``U(-a, a)``, ``a = sqrt(6 / (fan_in +
  fan_out))`` (2 for ``"logistic"``), drawn from ``random_state`` as
  scikit-learn draws them (``init="xpnet"`` for xpnet's own: He or Glorot
  from the seed, zero biases, as ``xpnet train``);
- ``alpha``: ``0.5 * alpha * ||W||^2`` divided by the batch's weight sum,
  added to the batch's loss (and to ``loss_curve_``);
- ``solver="lbfgs"``: SciPy's L-BFGS-B with ``max_iter``, ``max_fun`` and
  ``tol``; ``"sgd"``/``"adam"``: scikit-learn's epochs, batches
  (``batch_size="auto"``: ``min(200, n)``), ``learning_rate`` schedules and
  stopping rule (see :mod:`xpnet.sklearn.stopping`), ``early_stopping`` on a
  ``validation_fraction`` split drawn as scikit-learn draws it.

What differs, and why:

- Adam adds ``epsilon`` after the bias correction of the second moment
  (PyTorch's arithmetic), scikit-learn before it: the same steps but for
  ``epsilon`` scaled by ``sqrt(1 - beta_2 ** t)``.
- Shuffling draws from xpnet's own RNG (seeded by ``random_state``), not
  scikit-learn's: the same data in another order.
- With uneven ``sample_weight``, each batch's L2 share and ``loss_curve_``
  use the mean weight in place of the batch's own weight sum, and the
  epoch's loss is the weighted mean over its rows (the same without
  weights or with one batch per epoch).
- A diverging epoch (xpnet's guard: a NaN/inf loss, or one 100x the start)
  counts with a NaN loss, and training goes on, as scikit-learn's does.
- Sparse ``X`` (CSR/CSC) is made dense, whole, once per call.

xpnet's extras, which change nothing scikit-learn's parameters mean:
``device``/``backend`` (where xpnet computes, see :func:`xpnet.resolve`;
``None`` for both: the CPU with NumPy, or under scikit-learn's array-API
dispatch the namespace and device of ``X``: torch CPU/CUDA, CuPy,
array-api-strict; dispatch needs ``SCIPY_ARRAY_API=1`` in the environment
before SciPy is imported), ``dtype`` (``None``: ``X``'s, as scikit-learn:
float32 input in float32, float64 and integers in float64), ``init``,
``solver="adamw"``, ``lr_decay`` (inverse-time decay per update, with
``learning_rate="constant"``) and ``callbacks`` (:mod:`xpnet.callbacks`
objects that the stochastic solvers' epochs call after scikit-learn's rule:
loggers, TensorBoard, checkpoints); :meth:`~BaseMLP.xpnet_model` hands out
the fitted :class:`xpnet.Sequential` (for ``xpnet.save``, ONNX export).

Fitted estimators pickle their weights, optimizer state and shuffling RNG as
host NumPy data, never modules or device arrays; an unpickled estimator
rebuilds its model on first use (on the CPU, with a warning, when the device
it was fitted on is missing).
"""

from __future__ import annotations

from typing import Any

import array_api_compat
import numpy as np
from sklearn.base import ClassifierMixin, RegressorMixin
from sklearn.metrics import accuracy_score, r2_score
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import (
    _check_partial_fit_first_call,
    check_classification_targets,
    type_of_target,
    unique_labels,
)

from ..backend import to_numpy
from ..errors import XpnetError
from ..losses import (
    BinaryCrossEntropy,
    CrossEntropy,
    Loss,
    MeanSquaredError,
    PoissonDeviance,
)
from ..model import Sequential
from . import arrays
from .base import BaseMLP, forward
from .params import STOCHASTIC_SOLVERS

__all__ = ["MLPClassifier", "MLPRegressor"]


def _stochastic(est: BaseMLP) -> bool:
    """Whether ``partial_fit`` is available: the stochastic solvers only;
    scikit-learn's error otherwise."""
    if est.solver not in STOCHASTIC_SOLVERS:
        raise AttributeError(
            "partial_fit is only available for stochastic optimizers. "
            f"{est.solver} is not stochastic."
        )
    return True


def _score_or_nan(values: np.ndarray, score: Any) -> float:
    """scikit-learn's validation score: NaN when the outputs are not finite."""
    if not np.all(np.isfinite(values)):
        return float("nan")
    return float(score())


class MLPClassifier(ClassifierMixin, BaseMLP):
    """A multilayer perceptron classifier trained by xpnet: the parameters
    and fitted attributes of ``sklearn.neural_network.MLPClassifier`` (see
    :mod:`xpnet.sklearn.estimators` for the few differences) plus ``device``,
    ``backend``, ``dtype``, ``init``, ``lr_decay`` and ``callbacks``.

    Fitted attributes: ``classes_``, ``n_features_in_``, ``feature_names_in_``
    (from a DataFrame), ``loss_`` (with the L2 term), ``loss_curve_``,
    ``best_loss_``, ``validation_scores_``, ``best_validation_score_``
    (stochastic solvers), ``n_iter_`` (epochs of the last fit, or L-BFGS
    iterations), ``t_`` (training samples seen), ``coefs_``, ``intercepts_``
    (settable), ``n_layers_``, ``n_outputs_``, ``out_activation_``
    (``"softmax"`` or ``"logistic"``).
    """

    _is_classifier = True
    #: scikit-learn's classifier optimises log-loss, not a parameter there
    loss = "log_loss"

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> MLPClassifier:
        """Train on ``X: (samples, features)`` (dense or sparse) and labels
        ``y: (samples,)`` or a label indicator matrix ``(samples, labels)``,
        from scratch unless ``warm_start``."""
        return self._fit(X, y, sample_weight, incremental=False)

    @available_if(_stochastic)
    def partial_fit(
        self, X: Any, y: Any, sample_weight: Any = None, classes: Any = None
    ) -> MLPClassifier:
        """One epoch over ``X, y``; the first call needs ``classes``, every
        label that any call will pass (not for multilabel ``y``)."""
        if _check_partial_fit_first_call(self, classes):
            self._label_binarizer = LabelBinarizer()
            if type_of_target(y).startswith("multilabel"):
                self._label_binarizer.fit(y)
            else:
                self._label_binarizer.fit(classes)
        return self._fit(X, y, sample_weight, incremental=True, classes=classes)

    def _targets(
        self, y: np.ndarray, classes: Any, incremental: bool, first_pass: bool
    ) -> tuple[np.ndarray, int]:
        """scikit-learn's ``_validate_input`` for labels: ``classes_`` set
        (or checked), then the model's targets: class indices ``(samples,)``
        for softmax, 0/1 ``(samples,)`` for binary, the indicator matrix
        ``(samples, labels)`` for multilabel. Returns them and the output
        count; sets ``out_activation_`` on a first pass."""
        check_classification_targets(y)
        if "classes_" not in vars(self) or (not self.warm_start and not incremental):
            self._label_binarizer = LabelBinarizer().fit(y)
            self.classes_ = self._label_binarizer.classes_
        else:
            found = unique_labels(y)
            if self.warm_start:
                if set(found) != set(self.classes_):
                    raise XpnetError(
                        "warm_start can only be used where `y` has the same classes "
                        f"as in the previous call to fit. Previously got "
                        f"{self.classes_}, `y` has {found}"
                    )
            elif len(np.setdiff1d(found, self.classes_, assume_unique=True)):
                raise XpnetError(
                    "`y` has classes not in `self.classes_`. `self.classes_` has "
                    f"{self.classes_}. 'y' has {found}."
                )
        binarizer = self._label_binarizer
        Y = binarizer.transform(y)  # one class: a column of zeros, as sklearn
        if first_pass:
            multiclass = binarizer.y_type_ == "multiclass"
            self.out_activation_ = "softmax" if multiclass else "logistic"
        if self.out_activation_ == "softmax":
            return np.argmax(Y, axis=1).astype(np.int64), Y.shape[1]
        if Y.shape[1] == 1:
            return Y[:, 0].astype(np.int64), 1
        return Y.astype(np.int64), Y.shape[1]

    def _loss(self) -> Loss:
        if self.out_activation_ == "softmax":
            return CrossEntropy()
        return BinaryCrossEntropy(outputs="sum")

    def _stratify_by(self, targets: np.ndarray) -> np.ndarray | None:
        """scikit-learn stratifies the early-stopping split for one output
        only (binary), on the 0/1 column as booleans."""
        return (
            targets.reshape(-1, 1).astype(bool)
            if targets.ndim == 1 and (self.out_activation_ == "logistic")
            else None
        )

    def _validation_score(
        self, model: Sequential, X: Any, y: np.ndarray, weight: np.ndarray | None
    ) -> float:
        out = to_numpy(forward(model, X))
        return _score_or_nan(
            out,
            lambda: accuracy_score(y, self._labels(out), sample_weight=weight),
        )

    def _labels(self, probabilities: np.ndarray) -> np.ndarray:
        """Host labels from host outputs ``(samples, outputs)``."""
        if self.out_activation_ == "softmax":
            return self.classes_[np.argmax(probabilities, axis=1)]
        if probabilities.shape[1] == 1:
            positive = (probabilities[:, 0] > 0.5).astype(np.int64)
            return self.classes_[np.minimum(positive, len(self.classes_) - 1)]
        return (probabilities > 0.5).astype(np.int64)  # multilabel indicators

    def predict(self, X: Any) -> Any:
        """Class labels ``(samples,)`` from ``classes_`` (an indicator matrix
        for multilabel): NumPy, or the namespace and device of ``X`` under
        array-API dispatch."""
        out, X = self._outputs(X, "predict")
        if self.out_activation_ == "softmax":
            xp = array_api_compat.array_namespace(out)
            labels = self.classes_[to_numpy(xp.argmax(out, axis=1))]
        else:
            labels = self._labels(to_numpy(out))
        return arrays.like(labels, X)

    def predict_proba(self, X: Any) -> Any:
        """Class probabilities ``(samples, n_classes)`` (per label for
        multilabel), in ``X``'s float dtype: NumPy, or ``X``'s namespace under
        array-API dispatch."""
        return self._probabilities(X, "predict_proba")

    def predict_log_proba(self, X: Any) -> Any:
        """The logarithm of :meth:`predict_proba`."""
        proba = self._probabilities(X, "predict_log_proba")
        return array_api_compat.array_namespace(proba).log(proba)

    def _probabilities(self, X: Any, method: str) -> Any:
        out, X = self._outputs(X, method)
        if out.shape[1] == 1 and self.out_activation_ == "logistic":
            xp = array_api_compat.array_namespace(out)
            out = xp.concat([1.0 - out, out], axis=1)
        return arrays.like(out, X, X.dtype)


class MLPRegressor(RegressorMixin, BaseMLP):
    """A multilayer perceptron regressor trained by xpnet: the parameters and
    fitted attributes of ``sklearn.neural_network.MLPRegressor``, ``loss``
    (``"squared_error"`` or ``"poisson"``) first as there, plus ``device``,
    ``backend``, ``dtype``, ``init``, ``lr_decay`` and ``callbacks``.

    ``y``: ``(samples,)`` or ``(samples, outputs)``; ``(samples, 1)`` is
    treated as ``(samples,)`` with a DataConversionWarning. Fitted attributes
    as :class:`MLPClassifier`'s, without ``classes_``; ``out_activation_`` is
    ``"identity"`` or ``"exp"``; the validation score of ``early_stopping`` is
    R² (scikit-learn's ``r2_score``).
    """

    _losses = ("squared_error", "poisson")
    #: ndim of the targets given to fit: predict returns (n,) for 1
    _target_ndim: int = 1

    def __init__(
        self,
        loss: str = "squared_error",
        hidden_layer_sizes: Any = (100,),
        activation: str = "relu",
        *,
        solver: str = "adam",
        alpha: float = 0.0001,
        batch_size: int | str = "auto",
        learning_rate: str = "constant",
        learning_rate_init: float = 0.001,
        power_t: float = 0.5,
        max_iter: int = 200,
        shuffle: bool = True,
        random_state: Any = None,
        tol: float = 1e-4,
        verbose: bool | int = False,
        warm_start: bool = False,
        momentum: float = 0.9,
        nesterovs_momentum: bool = True,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-8,
        n_iter_no_change: int | float = 10,
        max_fun: int = 15000,
        device: str | None = None,
        backend: str | None = None,
        dtype: str | None = None,
        init: str = "sklearn",
        lr_decay: float = 0.0,
        callbacks: Any = None,
    ):
        self.loss = loss
        given = dict(locals())
        del given["self"], given["loss"], given["__class__"]
        super().__init__(**given)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> MLPRegressor:
        """Train on ``X: (samples, features)`` (dense or sparse) and targets
        ``y``, from scratch unless ``warm_start``."""
        return self._fit(X, y, sample_weight, incremental=False)

    @available_if(_stochastic)
    def partial_fit(self, X: Any, y: Any, sample_weight: Any = None) -> MLPRegressor:
        """One epoch over ``X, y``."""
        return self._fit(X, y, sample_weight, incremental=True)

    def _targets(
        self, y: np.ndarray, classes: Any, incremental: bool, first_pass: bool
    ) -> tuple[np.ndarray, int]:
        """Float targets ``(samples,)`` or ``(samples, outputs)``."""
        y = np.asarray(y, dtype=np.float64)
        n_outputs = 1 if y.ndim == 1 else y.shape[1]
        if not first_pass and y.ndim != self._target_ndim:
            raise XpnetError(
                f"y has shape {y.shape} but {type(self).__name__} was fitted on "
                f"{self.n_outputs_} output(s): pass targets of the same shape"
            )
        if self.loss == "poisson" and np.any(y < 0):
            raise XpnetError(
                "loss='poisson' needs non-negative targets y (counts or rates), "
                f"got a minimum of {y.min():g}"
            )
        if first_pass:
            self.out_activation_ = "exp" if self.loss == "poisson" else "identity"
        self._target_ndim = y.ndim
        return y, n_outputs

    def _loss(self) -> Loss:
        if self.out_activation_ == "exp":
            return PoissonDeviance()
        return MeanSquaredError(outputs="mean")

    def _stratify_by(self, targets: np.ndarray) -> None:
        return None

    def _validation_score(
        self, model: Sequential, X: Any, y: np.ndarray, weight: np.ndarray | None
    ) -> float:
        values = to_numpy(forward(model, X))
        values = values[:, 0] if y.ndim == 1 else values
        return _score_or_nan(values, lambda: r2_score(y, values, sample_weight=weight))

    def predict(self, X: Any) -> Any:
        """Values ``(samples,)`` (1-D targets) or ``(samples, outputs)``, in
        ``X``'s float dtype: NumPy, or ``X``'s namespace under array-API
        dispatch."""
        out, X = self._outputs(X, "predict")
        values = arrays.like(out, X, X.dtype)
        if self._target_ndim == 1:
            return array_api_compat.array_namespace(values).reshape(values, (-1,))
        return values
