"""Loss functions: value and gradient with respect to the network's output.

Shapes: ``out: (batch, outputs)``; targets are either integer class labels
``y: (batch,)`` or an array shaped like ``out`` (one-hot, probabilities or
regression targets). Every loss is a mean over the batch, so its gradient
carries the ``1 / batch`` factor.
"""

from __future__ import annotations

from typing import Any

import array_api_compat

from .activations import sigmoid, softmax
from .arraytypes import Array
from .backend import Backend
from .errors import XpnetError
from .inplace import InPlace


class Loss:
    """Base class.

    ``value(out, y)`` is the mean loss over the batch (a 0-d array on the
    device: never read back per step); ``grad(out, y, scale)`` is
    ``scale * dL/dout`` (the training step folds the learning rate into
    ``scale``), written in place where the namespace allows; the training loop
    calls only ``grad`` per step and ``value`` once per epoch, on the outputs it
    kept. ``targets(y, outputs)`` turns integer labels into the float targets
    the loss compares with (one-hot), once per ``fit``.
    ``probabilities(out)`` maps outputs to what ``predict_proba`` returns;
    ``correct(out, labels)`` counts right predictions on the device.
    """

    def build(self, backend: Backend, dtype: str) -> None:
        self.xp = backend.xp
        self.ops = backend.ops
        self.device = backend.device
        self.dtype = backend.dtype(dtype)
        self._arange: dict[int, Array] = {}

    def _inplace(self, x: Array) -> InPlace:
        return InPlace(self.xp, array_api_compat.is_writeable_array(x))

    def __call__(self, out: Array, y: Array) -> Array:
        return self.value(out, y)

    def value(self, out: Array, y: Array) -> Array:
        """The mean loss over the batch, 0-d, on the device."""
        raise NotImplementedError

    def grad(self, out: Array, y: Array, scale: float = 1.0) -> Array:
        """``scale * dL/dout``, shaped like ``out``."""
        raise NotImplementedError

    def value_and_grad(self, out: Array, y: Array) -> tuple[Array, Array]:
        return self.value(out, y), self.grad(out, y)

    def probabilities(self, out: Array) -> Array:
        return out

    def one_hot(self, y: Array, classes: int) -> Array:
        """Integer labels ``(batch,)`` -> one-hot ``(batch, classes)`` in the dtype."""
        xp = self.xp
        if classes not in self._arange:
            self._arange[classes] = xp.arange(classes, device=self.device)
        return xp.astype(y[:, None] == self._arange[classes][None, :], self.dtype)

    def targets(self, y: Array, outputs: int) -> Array:
        """Targets ``(batch, outputs)`` for a model with ``outputs`` outputs:
        one-hot when ``y`` holds integer labels and ``outputs > 1``."""
        xp = self.xp
        if y.ndim == 1:
            if outputs > 1 and xp.isdtype(y.dtype, "integral"):
                return self.one_hot(y, outputs)
            return xp.reshape(xp.astype(y, self.dtype), (-1, 1))
        return y if y.dtype == self.dtype else xp.astype(y, self.dtype)

    def correct(self, out: Array, labels: Array) -> Array:
        """Number of rows whose arg-max output equals the integer label."""
        xp = self.xp
        if out.shape[1] == 1:
            hits = (self.probabilities(out)[:, 0] > 0.5) == (labels > 0)
            return xp.sum(xp.astype(hits, xp.int64))
        return self.ops.argmax_hits(out, labels)

    def config(self) -> dict[str, Any]:
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


class MeanSquaredError(Loss):
    """``L = (1/batch) * sum_n 1/2 ||out_n - y_n||^2``.

    The ½ is the convention of the classic texts: it cancels the 2 of the
    derivative, so ``dL/dout = (out - y) / batch``. (This is half of
    ``torch.nn.MSELoss(reduction="sum") / batch``.) Integer labels are turned
    into one-hot targets.
    """

    def value(self, out: Array, y: Array) -> Array:
        diff = out - self.targets(y, out.shape[1])
        return 0.5 * self.xp.sum(diff * diff) / out.shape[0]

    def grad(self, out: Array, y: Array, scale: float = 1.0) -> Array:
        diff = out - self.targets(y, out.shape[1])
        return self._inplace(diff).mul(diff, scale / out.shape[0])


class BinaryCrossEntropy(Loss):
    """Binary cross-entropy, averaged over all elements (batch x outputs).

    ``L = -mean(y log p + (1 - y) log(1 - p))``. Integer labels ``(batch,)``
    are 0/1 for one output and one-hot over ``K > 1`` outputs (one binary
    "is it class k?" problem per output; the predicted class is the arg-max).

    Args:
        from_logits: ``True`` (default, stable): ``out`` are logits ``z`` and
            ``L = mean(max(z, 0) - z y + log(1 + exp(-|z|)))``, with gradient
            ``(sigmoid(z) - y) / size``. ``False``: ``out`` are probabilities,
            clipped to ``[eps, 1 - eps]`` so the log never sees 0; gradient
            ``(p - y) / (p (1 - p)) / size``.
    """

    def __init__(self, from_logits: bool = True, eps: float = 1e-7):
        self.from_logits = bool(from_logits)
        self.eps = float(eps)

    def value(self, out: Array, y: Array) -> Array:
        xp = self.xp
        y = self.targets(y, out.shape[1])
        size = out.shape[0] * out.shape[1]
        if self.from_logits:
            z = out
            loss = xp.sum(self.ops.relu(z) - z * y + xp.log1p(xp.exp(-xp.abs(z))))
            return loss / size
        p = self.ops.clip(out, self.eps, 1.0 - self.eps)
        return -xp.sum(y * xp.log(p) + (1.0 - y) * xp.log1p(-p)) / size

    def grad(self, out: Array, y: Array, scale: float = 1.0) -> Array:
        y = self.targets(y, out.shape[1])
        step = scale / (out.shape[0] * out.shape[1])
        if self.from_logits:
            g = sigmoid(self.xp, out)
            u = self._inplace(g)
            return u.mul(u.sub(g, y), step)
        p = self.ops.clip(out, self.eps, 1.0 - self.eps)
        return (p - y) / (p * (1.0 - p)) * step

    def probabilities(self, out: Array) -> Array:
        return sigmoid(self.xp, out) if self.from_logits else out

    def config(self) -> dict[str, Any]:
        return {"from_logits": self.from_logits}


class CrossEntropy(Loss):
    """Categorical cross-entropy ``L = -(1/batch) sum_n sum_k y_nk log p_nk``.

    Args:
        from_logits: ``True`` (default): ``out`` are logits and the softmax is
            fused into the loss, ``log p = z - max(z) - log(sum(exp(z - max(z))))``,
            so nothing overflows for large logits and ``dL/dz = (p - y) / batch``.
            ``False``: ``out`` are probabilities (e.g. after a Softmax layer),
            clipped to ``[eps, 1]``; ``dL/dp = -y / p / batch``.

    Targets: integer class labels ``(batch,)`` in ``[0, classes)`` or one-hot /
    probability rows ``(batch, classes)``.
    """

    def __init__(self, from_logits: bool = True, eps: float = 1e-12):
        self.from_logits = bool(from_logits)
        self.eps = float(eps)

    def value(self, out: Array, y: Array) -> Array:
        xp = self.xp
        y = self.targets(y, out.shape[1])
        n = out.shape[0]
        if self.from_logits:
            shifted = out - self.ops.row_max(out)
            total = self.ops.row_sum(xp.exp(shifted))
            return -xp.sum(y * (shifted - xp.log(total))) / n
        p = self.ops.clip(out, self.eps, 1.0)
        return -xp.sum(y * xp.log(p)) / n

    def grad(self, out: Array, y: Array, scale: float = 1.0) -> Array:
        y = self.targets(y, out.shape[1])
        step = scale / out.shape[0]
        if self.from_logits:
            # softmax(out) - y, times the scale (a backend may fuse it)
            return self.ops.softmax_cross_entropy_grad(out, y, step)
        p = self.ops.clip(out, self.eps, 1.0)
        return -y / p * step

    def probabilities(self, out: Array) -> Array:
        return softmax(self.xp, out) if self.from_logits else out

    def config(self) -> dict[str, Any]:
        return {"from_logits": self.from_logits}


LOSSES: dict[str, type[Loss]] = {
    "cross_entropy": CrossEntropy,
    "mse": MeanSquaredError,
    "bce": BinaryCrossEntropy,
}
_ALIASES = {
    "categorical_cross_entropy": "cross_entropy",
    "categorical_crossentropy": "cross_entropy",
    "crossentropy": "cross_entropy",
    "ce": "cross_entropy",
    "mean_squared_error": "mse",
    "binary_cross_entropy": "bce",
    "binary_crossentropy": "bce",
}


def get_loss(name: str | Loss) -> Loss:
    """A loss from its name: ``cross-entropy``, ``mse`` or ``bce`` (all on logits
    where that applies), or a :class:`Loss` instance, returned as is."""
    if isinstance(name, Loss):
        return name
    key = str(name).strip().lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    try:
        return LOSSES[key]()
    except KeyError:
        choices = ", ".join(k.replace("_", "-") for k in LOSSES)
        raise XpnetError(f"unknown loss {name!r}: choose one of {choices}") from None
