"""The parameters of the scikit-learn estimators: their defaults (scikit-learn's
``MLPClassifier``/``MLPRegressor``'s where xpnet has the feature), their checks
(in ``fit``, never in ``__init__``, as scikit-learn requires, each failure a
one-line ValueError in scikit-learn's words) and what they build: the
optimizer and the layers of the :func:`xpnet.mlp`.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state

from ..activations import get_activation
from ..errors import XpnetError
from ..optimizers import SGD, Adam, AdamW, Optimizer
from ..schedules import Constant, InverseTimeDecay

__all__ = ["ACTIVATIONS", "DTYPES", "SOLVERS", "STOCHASTIC_SOLVERS", "MLPParams"]

#: scikit-learn's names first, then xpnet's other hidden-layer activations
ACTIVATIONS = (
    "identity",
    "logistic",
    "tanh",
    "relu",
    "sigmoid",
    "leaky_relu",
    "gelu",
    "elu",
    "softplus",
    "silu",
)
#: scikit-learn's solvers, then xpnet's AdamW
SOLVERS = ("lbfgs", "sgd", "adam", "adamw")
STOCHASTIC_SOLVERS = ("sgd", "adam", "adamw")
LEARNING_RATES = ("constant", "invscaling", "adaptive")
DTYPES = ("float32", "float64")
#: how the first weights are drawn: scikit-learn's way or xpnet's
INITS = ("sklearn", "xpnet")


class MLPParams(BaseEstimator):
    """The constructor parameters of both estimators (see
    :mod:`xpnet.sklearn.estimators` for their meaning), their checks, and the
    optimizer and layers they describe. The regressor's constructor adds
    ``loss`` in front, as scikit-learn's."""

    #: the values ``loss`` may take (the classifier has only log-loss)
    _losses: tuple[str, ...] = ("log_loss",)

    def __init__(
        self,
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
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.device = device
        self.backend = backend
        self.dtype = dtype
        self.init = init
        self.lr_decay = lr_decay
        self.callbacks = callbacks

    def _invalid(self, name: str, what: str) -> XpnetError:
        value = getattr(self, name)
        return XpnetError(
            f"The {name!r} parameter of {type(self).__name__} must be {what}. "
            f"Got {value!r} instead."
        )

    def _check_interval(
        self, name: str, low: float, high: float, closed: str, integer: bool = False
    ) -> None:
        value = getattr(self, name)
        left = "[" if closed in ("left", "both") else "("
        right = "]" if closed in ("right", "both") else ")"
        kind = "an int" if integer else "a float"
        what = f"{kind} in the range {left}{low}, {high}{right}"
        if isinstance(value, bool | np.bool_) or not isinstance(
            value, numbers.Integral if integer else numbers.Real
        ):
            raise self._invalid(name, what)
        v = float(value)
        above = v > low or (v == low and left == "[")
        below = v < high or (v == high and right == "]")
        if not (above and below):  # also NaN
            raise self._invalid(name, what)

    def _hidden_sizes(self) -> tuple[int, ...]:
        sizes = self.hidden_layer_sizes
        what = "a positive int or a sequence of positive ints"
        if isinstance(sizes, numbers.Integral) and not isinstance(sizes, bool):
            sizes = (sizes,)
        if isinstance(sizes, str) or not hasattr(sizes, "__iter__"):
            raise self._invalid("hidden_layer_sizes", what)
        sizes = tuple(sizes)
        for size in sizes:
            bad = isinstance(size, bool) or not isinstance(size, numbers.Integral)
            if bad or size < 1:
                raise self._invalid("hidden_layer_sizes", what)
        return tuple(int(s) for s in sizes)

    def _validate_params(self) -> None:
        """Check every parameter (in fit, as scikit-learn does, never in
        ``__init__``/``set_params``); a one-line ValueError names the first
        bad one."""
        self._hidden_sizes()
        if not isinstance(self.activation, str) or self.activation not in ACTIVATIONS:
            raise self._invalid("activation", f"a str among {set(ACTIVATIONS)}")
        for name, choices in (
            ("solver", SOLVERS),
            ("learning_rate", LEARNING_RATES),
            ("init", INITS),
            ("loss", self._losses),
        ):
            value = getattr(self, name)
            if not isinstance(value, str) or value not in choices:
                raise self._invalid(name, f"a str among {set(choices)}")
        inf = math.inf
        self._check_interval("alpha", 0.0, inf, "left")
        if self.batch_size != "auto":
            self._check_interval("batch_size", 1, inf, "left", integer=True)
        self._check_interval("learning_rate_init", 0.0, inf, "neither")
        self._check_interval("power_t", 0.0, inf, "left")
        self._check_interval("lr_decay", 0.0, inf, "left")
        if self.lr_decay and self.learning_rate != "constant":
            raise self._invalid(
                "lr_decay", "0 unless learning_rate='constant' (it is a schedule too)"
            )
        self._check_interval("momentum", 0.0, 1.0, "left")
        self._check_interval("beta_1", 0.0, 1.0, "left")
        self._check_interval("beta_2", 0.0, 1.0, "left")
        self._check_interval("epsilon", 0.0, inf, "neither")
        self._check_interval("max_iter", 1, inf, "left", integer=True)
        self._check_interval("tol", 0.0, inf, "left")
        self._check_interval("validation_fraction", 0.0, 1.0, "neither")
        if self.n_iter_no_change != inf:
            self._check_interval("n_iter_no_change", 1, inf, "left", integer=True)
        self._check_interval("max_fun", 1, inf, "left", integer=True)
        for name in ("shuffle", "nesterovs_momentum", "early_stopping", "warm_start"):
            if not isinstance(getattr(self, name), bool | np.bool_):
                raise self._invalid(name, "a bool")
        if isinstance(self.verbose, numbers.Real) and not self.verbose >= 0:
            raise self._invalid("verbose", "a bool or a non-negative int")
        for name in ("device", "backend"):
            if getattr(self, name) is not None and not isinstance(
                getattr(self, name), str
            ):
                raise self._invalid(name, "None or a str")
        if self.dtype is not None and self.dtype not in DTYPES:
            raise self._invalid("dtype", f"None or a str among {set(DTYPES)}")
        if self.callbacks is not None and (
            isinstance(self.callbacks, str | bytes)
            or not hasattr(self.callbacks, "__iter__")
        ):
            raise self._invalid("callbacks", "None or a list of xpnet callbacks")
        check_random_state(self.random_state)  # its own one-line ValueError

    def _seed(self) -> int | None:
        """The model's seed: ``random_state`` itself when it is an int (so the
        estimator trains exactly as ``xpnet train --seed`` does), a draw from it
        when it is a RandomState, ``None`` (fresh entropy) for ``None``."""
        state = self.random_state
        if state is None:
            return None
        if isinstance(state, numbers.Integral):
            return int(state)
        return int(check_random_state(state).randint(np.iinfo(np.int32).max))

    def _optimizer(self, lr: float | None = None) -> Optimizer:
        """A fresh optimizer of the stochastic solver, at learning rate ``lr``
        (default ``learning_rate_init``; ``learning_rate`` changes it between
        epochs, see :mod:`xpnet.sklearn.stopping`)."""
        lr = self.learning_rate_init if lr is None else lr
        schedule = (
            InverseTimeDecay(lr, self.lr_decay) if self.lr_decay else Constant(lr)
        )
        if self.solver == "sgd":
            return SGD(
                schedule,
                momentum=self.momentum,
                nesterov=bool(self.nesterovs_momentum) and self.momentum > 0,
            )
        cls = AdamW if self.solver == "adamw" else Adam
        return cls(schedule, beta1=self.beta_1, beta2=self.beta_2, eps=self.epsilon)

    def _layers(self, n_features: int, n_outputs: int) -> list[dict[str, Any]]:
        """The architecture as layer configs (what :meth:`_new_model` builds)."""
        sizes = [n_features, *self._hidden_sizes(), n_outputs]
        name = "sigmoid" if self.activation == "logistic" else self.activation
        activation = {"type": type(get_activation(name)).__name__}
        layers: list[dict[str, Any]] = []
        for i, (a, b) in enumerate(zip(sizes, sizes[1:], strict=False)):
            layers.append({"type": "Dense", "in_features": a, "out_features": b})
            if i < len(sizes) - 2:
                layers.append(dict(activation))
        return layers

    def _initial_weights(
        self, sizes: list[int], random_state: np.random.RandomState
    ) -> dict[str, np.ndarray]:
        """scikit-learn's first weights for layer widths ``sizes``, as a state
        dict of the :meth:`_layers` model (``"<layer index>.W"``/``".b"``).

        Each layer's weights ``(fan_in, fan_out)`` and then its biases
        ``(fan_out,)`` are drawn from ``U(-a, a)``, ``a = sqrt(f / (fan_in +
        fan_out))`` with ``f = 2`` for the logistic activation and 6 otherwise
        (Glorot's), from ``random_state`` in the order scikit-learn draws them,
        so the same ``random_state`` gives scikit-learn's initial network."""
        factor = 2.0 if self.activation == "logistic" else 6.0
        weights: dict[str, np.ndarray] = {}
        for i, (fan_in, fan_out) in enumerate(zip(sizes, sizes[1:], strict=False)):
            bound = np.sqrt(factor / (fan_in + fan_out))
            # Dense layers sit at every other position (an activation between).
            weights[f"{2 * i}.W"] = random_state.uniform(
                -bound, bound, (fan_in, fan_out)
            )
            weights[f"{2 * i}.b"] = random_state.uniform(-bound, bound, fan_out)
        return weights
