"""Layers: the base class and the fully connected :class:`Dense` layer.

Every layer gets its Array API namespace once, in :meth:`Layer.build`, and keeps
it. ``forward`` stores what ``backward`` needs; ``backward`` takes the gradient
of the loss with respect to the layer's output and returns the gradient with
respect to its input, filling ``grads`` for layers that have parameters.
"""

from __future__ import annotations

from typing import Any

import array_api_compat

from .arraytypes import Array, HostRNG, Namespace
from .backend import Backend
from .errors import XpnetError
from .fastpaths import Ops
from .initializers import INITIALIZERS, initial_weights


class Layer:
    """Base class: a differentiable map from ``(batch, in)`` to ``(batch, out)``.

    Attributes:
        params: parameter name -> array on the model's device.
        grads: parameter name -> gradient array of the same shape, filled by
            ``backward``.
        decay: names of the parameters that weight decay applies to.
    """

    params: dict[str, Array]
    grads: dict[str, Array]
    decay: frozenset[str] = frozenset()
    #: whether ``grads`` holds views of the model's flat gradient buffer, which
    #: ``backward`` writes into (see :class:`xpnet.parameters.Parameters`)
    grads_are_views: bool = False
    #: whether ``backward`` must return the gradient with respect to the input
    #: (the model switches it off for the first layer with parameters)
    needs_input_grad: bool = True

    def __init__(self) -> None:
        self.params = {}
        self.grads = {}
        self.xp: Namespace = None
        self.inplace = True

    def build(self, backend: Backend, dtype: str, rng: HostRNG | None = None) -> None:
        """Bind the layer to a namespace; layers with parameters create them."""
        self.xp = backend.xp
        self.ops: Ops = backend.ops
        self.dtype = backend.dtype(dtype)

    def forward(self, x: Array) -> Array:
        raise NotImplementedError

    def backward(self, grad: Array) -> Array | None:
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """Constructor arguments, for saving the architecture as JSON."""
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


class Dense(Layer):
    """Fully connected layer ``y = x @ W + b``.

    Shapes: ``x: (batch, in_features)``, ``W: (in_features, out_features)``,
    ``b: (out_features,)``, ``y: (batch, out_features)``.

    Args:
        init: weight initialiser name (see :data:`xpnet.initializers.INITIALIZERS`)
            or ``"auto"``, which lets :class:`~xpnet.model.Sequential` pick He for
            ReLU-like activations and Glorot otherwise. Biases start at zero.
    """

    decay = frozenset({"W"})

    def __init__(self, in_features: int, out_features: int, init: str = "auto"):
        super().__init__()
        for name, value in (
            ("in_features", in_features),
            ("out_features", out_features),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise XpnetError(
                    f"Dense {name} must be a positive integer, got {value!r}"
                )
        if init != "auto" and init not in INITIALIZERS:
            raise XpnetError(
                f"unknown initialiser {init!r}: choose one of auto, "
                + ", ".join(INITIALIZERS)
            )
        self.in_features = in_features
        self.out_features = out_features
        self.init = init
        # The first layer's input gradient is never used: Sequential switches it
        # off, which saves the largest matmul of the backward pass.
        self.needs_input_grad = True
        self._x: Array = None

    def build(
        self,
        backend: Backend,
        dtype: str,
        rng: HostRNG | None = None,
        default_init: str = "glorot_uniform",
    ) -> None:
        """Draw ``W`` from ``rng`` (``default_init`` when ``init="auto"``)."""
        super().build(backend, dtype)
        init = default_init if self.init == "auto" else self.init
        W = initial_weights(init, rng, self.in_features, self.out_features)
        self.params = {
            "W": backend.asarray(W, dtype),
            "b": self.xp.zeros(
                (self.out_features,), dtype=self.dtype, device=backend.device
            ),
        }
        self.grads = {}
        self.inplace = array_api_compat.is_writeable_array(self.params["W"])

    def forward(self, x: Array) -> Array:
        self._x = x
        y = x @ self.params["W"]
        if self.inplace:
            y += self.params["b"]
            return y
        return y + self.params["b"]

    def backward(self, grad: Array) -> Array | None:
        """``grad: (batch, out_features)`` -> ``(batch, in_features)``.

        dL/dW = x.T @ grad and dL/db = sum(grad, axis=0) go into ``grads``.
        """
        if self.grads_are_views:
            self.ops.matmul_into(self.grads["W"], self._x.T, grad)
            self.ops.sum_rows_into(self.grads["b"], grad)
        else:
            self.grads["W"] = self._x.T @ grad
            self.grads["b"] = self.xp.sum(grad, axis=0)
        if not self.needs_input_grad:
            return None
        return grad @ self.params["W"].T

    def config(self) -> dict[str, Any]:
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "init": self.init,
        }
