"""Activation functions as layers, and the name -> class table.

Each activation maps ``x: (batch, features)`` to an array of the same shape and
keeps what its derivative needs. All are written with Array API calls only;
the exponentials are arranged so that no intermediate overflows for large
``|x|`` (e.g. the sigmoid uses ``exp(-|x|)``).
"""

from __future__ import annotations

import math
from typing import Any

from .arraytypes import Array, Namespace
from .errors import XpnetError
from .layers import Layer


class Identity(Layer):
    """``f(x) = x``: a linear output (logits for the fused softmax loss)."""

    def forward(self, x: Array) -> Array:
        return x

    def backward(self, grad: Array) -> Array:
        return grad


class ReLU(Layer):
    """``f(x) = max(x, 0)``; ``f'(x) = 1 if x > 0 else 0`` (0 at the kink)."""

    def forward(self, x: Array) -> Array:
        self._y = self.ops.relu(x)
        return self._y

    def backward(self, grad: Array) -> Array:
        return self.ops.relu_grad(grad, self._y)


class LeakyReLU(Layer):
    """``f(x) = x if x > 0 else alpha * x``."""

    def __init__(self, alpha: float = 0.01):
        super().__init__()
        self.alpha = float(alpha)

    def forward(self, x: Array) -> Array:
        self._positive = x > 0.0
        return self.ops.select(self._positive, x, self.alpha * x)

    def backward(self, grad: Array) -> Array:
        return self.ops.select(self._positive, grad, self.alpha * grad)

    def config(self) -> dict[str, Any]:
        return {"alpha": self.alpha}


def sigmoid(xp: Namespace, x: Array) -> Array:
    """Logistic function without overflow: uses ``e = exp(-|x|) <= 1``."""
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0.0, 1.0 / (1.0 + e), e / (1.0 + e))


def softmax(xp: Namespace, x: Array) -> Array:
    """Row-wise softmax of ``x: (batch, classes)``, shifted by the row maximum."""
    e = xp.exp(x - xp.max(x, axis=1, keepdims=True))
    return e / xp.sum(e, axis=1, keepdims=True)


class Sigmoid(Layer):
    """``f(x) = 1 / (1 + exp(-x))``; ``f' = f (1 - f)``."""

    def forward(self, x: Array) -> Array:
        self._y = sigmoid(self.xp, x)
        return self._y

    def backward(self, grad: Array) -> Array:
        return grad * self._y * (1.0 - self._y)


class Tanh(Layer):
    """``f(x) = tanh(x)``; ``f' = 1 - f^2``."""

    def forward(self, x: Array) -> Array:
        self._y = self.xp.tanh(x)
        return self._y

    def backward(self, grad: Array) -> Array:
        return grad * (1.0 - self._y * self._y)


_GELU_C = math.sqrt(2.0 / math.pi)


class GELU(Layer):
    """Gaussian error linear unit, **tanh approximation** (Hendrycks & Gimpel).

    ``f(x) = 0.5 x (1 + tanh(u))`` with ``u = sqrt(2/pi) (x + 0.044715 x^3)``.
    The Array API standard has no ``erf``, so the exact form ``x Phi(x)`` is not
    available; the approximation differs from it by under 1e-3 everywhere
    (it is PyTorch's ``gelu(approximate="tanh")``). The derivative is the exact
    derivative of this approximation:
    ``f' = 0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2)``.
    """

    def forward(self, x: Array) -> Array:
        self._x = x
        self._t = self.xp.tanh(_GELU_C * (x + 0.044715 * x * x * x))
        return 0.5 * x * (1.0 + self._t)

    def backward(self, grad: Array) -> Array:
        x, t = self._x, self._t
        du = _GELU_C * (1.0 + 3.0 * 0.044715 * x * x)
        return grad * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du)


class ELU(Layer):
    """``f(x) = x if x > 0 else alpha (exp(x) - 1)``; ``f' = f + alpha`` for x <= 0."""

    def __init__(self, alpha: float = 1.0):
        super().__init__()
        self.alpha = float(alpha)

    def forward(self, x: Array) -> Array:
        xp = self.xp
        # max(x, 0) + alpha expm1(min(x, 0)): each term is zero on the other
        # side, and expm1 never sees a positive (overflowing) argument.
        self._positive = x > 0.0
        self._neg = self.alpha * xp.expm1(self.ops.negative_part(x))
        return self.ops.relu(x) + self._neg

    def backward(self, grad: Array) -> Array:
        # f' = 1 for x > 0, else alpha exp(x) = _neg + alpha.
        return self.ops.select(self._positive, grad, grad * (self._neg + self.alpha))

    def config(self) -> dict[str, Any]:
        return {"alpha": self.alpha}


class Softplus(Layer):
    """``f(x) = log(1 + exp(x))`` computed as ``logaddexp(0, x)``; ``f' = sigmoid``."""

    def forward(self, x: Array) -> Array:
        self._x = x
        return self.xp.logaddexp(self.xp.zeros_like(x), x)

    def backward(self, grad: Array) -> Array:
        return grad * sigmoid(self.xp, self._x)


class SiLU(Layer):
    """SiLU / Swish: ``f(x) = x sigmoid(x)``; ``f' = s + x s (1 - s)``."""

    def forward(self, x: Array) -> Array:
        self._x = x
        self._s = sigmoid(self.xp, x)
        return x * self._s

    def backward(self, grad: Array) -> Array:
        s = self._s
        return grad * (s + self._x * s * (1.0 - s))


class Softmax(Layer):
    """Row-wise softmax as a layer: ``x: (batch, classes)`` -> probabilities.

    For classification prefer logits (:class:`Identity`) with the fused
    ``cross_entropy`` loss: its gradient is simply ``(p - y) / batch``.
    Backward: ``dx = s * (g - sum(g * s, axis=1))``.
    """

    def forward(self, x: Array) -> Array:
        self._s = softmax(self.xp, x)
        return self._s

    def backward(self, grad: Array) -> Array:
        s = self._s
        return s * (grad - self.xp.sum(grad * s, axis=1, keepdims=True))


ACTIVATIONS: dict[str, type[Layer]] = {
    "identity": Identity,
    "linear": Identity,
    "relu": ReLU,
    "leaky_relu": LeakyReLU,
    "sigmoid": Sigmoid,
    "tanh": Tanh,
    "gelu": GELU,
    "elu": ELU,
    "softplus": Softplus,
    "silu": SiLU,
    "swish": SiLU,
    "softmax": Softmax,
}

# Activations whose variance-preserving initialisation is He's (fan_in) rather
# than Glorot's (fan_in + fan_out).
RELU_LIKE = (ReLU, LeakyReLU, ELU, GELU, SiLU, Softplus)


def activation_name(layer: Layer) -> str:
    """The table's name of an activation layer, e.g. ``"sigmoid"``."""
    for name, cls in ACTIVATIONS.items():
        if type(layer) is cls:
            return name
    return type(layer).__name__


def get_activation(name: str | Layer) -> Layer:
    """An activation layer from its name (``"relu"``, ``"leaky-relu"``, ...)."""
    if isinstance(name, Layer):
        return name
    key = str(name).strip().lower().replace("-", "_")
    try:
        return ACTIVATIONS[key]()
    except KeyError:
        raise XpnetError(
            f"unknown activation {name!r}: choose one of {', '.join(ACTIVATIONS)}"
        ) from None
