"""Loss functions: value and gradient with respect to the network's output.

Shapes: ``out: (batch, outputs)``; targets are either integer class labels
``y: (batch,)`` or an array shaped like ``out`` (one-hot, probabilities or
regression targets). Every loss is a mean over the batch, so its gradient
carries the ``1 / batch`` factor.
"""

from __future__ import annotations

from typing import Any

from .activations import sigmoid, softmax
from .arraytypes import Array
from .backend import Backend
from .errors import XpnetError


class Loss:
    """Base class.

    ``value_and_grad(out, y)`` returns the scalar loss (a 0-d array on the
    device: never read back per step) and ``dL/dout``. ``probabilities(out)``
    maps outputs to what ``predict_proba`` returns. ``correct(out, labels)``
    counts right predictions on the device.
    """

    #: whether targets may be integer class labels
    accepts_labels = True

    def build(self, backend: Backend, dtype: str) -> None:
        self.xp = backend.xp
        self.ops = backend.ops
        self.device = backend.device
        self.dtype = backend.dtype(dtype)
        self._arange: dict[int, Array] = {}

    def __call__(self, out: Array, y: Array) -> Array:
        return self.value_and_grad(out, y)[0]

    def value_and_grad(self, out: Array, y: Array) -> tuple[Array, Array]:
        raise NotImplementedError

    def probabilities(self, out: Array) -> Array:
        return out

    def one_hot(self, y: Array, classes: int) -> Array:
        """Integer labels ``(batch,)`` -> one-hot ``(batch, classes)`` in the dtype."""
        xp = self.xp
        if classes not in self._arange:
            self._arange[classes] = xp.arange(classes, device=self.device)
        return xp.astype(y[:, None] == self._arange[classes][None, :], self.dtype)

    def targets(self, out: Array, y: Array) -> Array:
        """Targets shaped like ``out``: one-hot when ``y`` holds labels."""
        if y.ndim == 1 and out.ndim == 2:
            if self.xp.isdtype(y.dtype, "integral") and out.shape[1] > 1:
                return self.one_hot(y, out.shape[1])
            return self.xp.reshape(self.xp.astype(y, self.dtype), (-1, 1))
        return y

    def correct(self, out: Array, labels: Array) -> Array:
        """Number of rows whose arg-max output equals the integer label."""
        xp = self.xp
        if out.shape[1] == 1:
            hits = (self.probabilities(out)[:, 0] > 0.5) == (labels > 0)
        else:
            hits = xp.argmax(out, axis=1) == labels
        return xp.sum(xp.astype(hits, xp.int64))

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

    def value_and_grad(self, out: Array, y: Array) -> tuple[Array, Array]:
        diff = out - self.targets(out, y)
        n = out.shape[0]
        return 0.5 * self.xp.sum(diff * diff) / n, diff / n


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

    def value_and_grad(self, out: Array, y: Array) -> tuple[Array, Array]:
        xp = self.xp
        y = self.targets(out, y)
        size = out.shape[0] * out.shape[1]
        if self.from_logits:
            z = out
            loss = xp.sum(self.ops.relu(z) - z * y + xp.log1p(xp.exp(-xp.abs(z))))
            return loss / size, (sigmoid(xp, z) - y) / size
        p = self.ops.clip(out, self.eps, 1.0 - self.eps)
        loss = -xp.sum(y * xp.log(p) + (1.0 - y) * xp.log1p(-p))
        return loss / size, (p - y) / (p * (1.0 - p)) / size

    def targets(self, out: Array, y: Array) -> Array:
        # Integer labels: 0/1 for one output, one-hot class indices for K > 1
        # (each output is then the binary "is it class k?" problem).
        if y.ndim == 1:
            return super().targets(out, y)
        return self.xp.astype(y, self.dtype)

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

    def value_and_grad(self, out: Array, y: Array) -> tuple[Array, Array]:
        xp = self.xp
        y = self.targets(out, y)
        n = out.shape[0]
        if self.from_logits:
            shifted = out - xp.max(out, axis=1, keepdims=True)
            e = xp.exp(shifted)
            total = xp.sum(e, axis=1, keepdims=True)
            log_p = shifted - xp.log(total)
            return -xp.sum(y * log_p) / n, (e / total - y) / n
        p = self.ops.clip(out, self.eps, 1.0)
        return -xp.sum(y * xp.log(p)) / n, -y / p / n

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
