"""Loss functions: value and gradient with respect to the network's output.

Shapes: ``out: (batch, outputs)``; targets are either integer class labels
``y: (batch,)`` or an array shaped like ``out`` (one-hot, probabilities or
regression targets). Every loss is a mean over the batch, so its gradient
carries the ``1 / batch`` factor.

Sample weights: ``value(out, y, weight)`` and ``grad(out, y, scale, weight)``
take an optional ``weight: (batch,)`` on the device; the loss is then the
weighted mean ``sum_n w_n l_n / sum_n w_n``, normalised by the batch's weight
sum (PyTorch's and scikit-learn's convention), so all-ones weights give the
unweighted mean. ``l_n`` is the loss of row ``n``: its outputs' losses summed
or averaged as the loss's ``outputs`` says.
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

    def __call__(self, out: Array, y: Array, weight: Array | None = None) -> Array:
        """The mean loss (:meth:`value`). A loss called before :meth:`build`
        (e.g. ``CrossEntropy()(out, y)``) is built for ``out``'s namespace,
        device and float dtype first, once."""
        if "xp" not in vars(self):
            self._build_like(out)
        return self.value(out, y, weight)

    def _build_like(self, out: Array) -> None:
        from .backend import DTYPES, backend_of

        dtype = str(getattr(out, "dtype", "")).rsplit(".", 1)[-1]
        if dtype not in DTYPES:
            raise XpnetError(
                f"a loss compares float32 or float64 outputs, got {dtype or 'no'} "
                "dtype: pass the network's outputs (or call build(backend, dtype))"
            )
        self.build(backend_of(out), dtype)

    def value(self, out: Array, y: Array, weight: Array | None = None) -> Array:
        """The mean loss over the batch (weighted by ``weight: (batch,)``
        when given), 0-d, on the device."""
        if weight is None:
            return self._mean(out, y)
        xp = self.xp
        return xp.sum(self.row_losses(out, y) * weight) / xp.sum(weight)

    def grad(
        self, out: Array, y: Array, scale: float = 1.0, weight: Array | None = None
    ) -> Array:
        """``scale * dL/dout``, shaped like ``out`` (``L`` weighted by
        ``weight: (batch,)`` when given)."""
        if weight is None:
            return self._mean_grad(out, y, scale)
        xp = self.xp
        factor = weight * (scale / xp.sum(weight))
        return self.row_grads(out, y) * xp.reshape(factor, (-1, 1))

    def _mean(self, out: Array, y: Array) -> Array:
        """The unweighted mean loss (the subclass's fast path)."""
        raise NotImplementedError

    def _mean_grad(self, out: Array, y: Array, scale: float) -> Array:
        """``scale * dL/dout`` of the unweighted mean (the fast path)."""
        raise NotImplementedError

    def row_losses(self, out: Array, y: Array) -> Array:
        """The loss of each row ``(batch,)``."""
        raise NotImplementedError

    def row_grads(self, out: Array, y: Array) -> Array:
        """``d l_n / d out_n`` for every row, shaped like ``out``."""
        raise NotImplementedError

    def value_and_grad(
        self, out: Array, y: Array, weight: Array | None = None
    ) -> tuple[Array, Array]:
        return self.value(out, y, weight), self.grad(out, y, 1.0, weight)

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


def _outputs_mode(outputs: str) -> str:
    if outputs not in ("sum", "mean"):
        raise XpnetError(f"outputs must be 'sum' or 'mean', got {outputs!r}")
    return outputs


class MeanSquaredError(Loss):
    """``L = (1/batch) * sum_n 1/2 ||out_n - y_n||^2``.

    The ½ is the convention of the classic texts: it cancels the 2 of the
    derivative, so ``dL/dout = (out - y) / batch``. (This is half of
    ``torch.nn.MSELoss(reduction="sum") / batch``.) Integer labels are turned
    into one-hot targets.

    Args:
        outputs: ``"sum"`` (default) adds the squared errors of a row's
            outputs, as above; ``"mean"`` averages them (``1/2`` of the mean
            over all elements: scikit-learn's ``squared_error``).
    """

    def __init__(self, outputs: str = "sum"):
        self.outputs = _outputs_mode(outputs)

    def _per_row(self, out: Array) -> float:
        return 1.0 / out.shape[1] if self.outputs == "mean" else 1.0

    def _mean(self, out: Array, y: Array) -> Array:
        diff = out - self.targets(y, out.shape[1])
        return 0.5 * self._per_row(out) * self.xp.sum(diff * diff) / out.shape[0]

    def _mean_grad(self, out: Array, y: Array, scale: float) -> Array:
        diff = out - self.targets(y, out.shape[1])
        step = scale * self._per_row(out) / out.shape[0]
        return self._inplace(diff).mul(diff, step)

    def row_losses(self, out: Array, y: Array) -> Array:
        diff = out - self.targets(y, out.shape[1])
        return (0.5 * self._per_row(out)) * self.xp.sum(diff * diff, axis=1)

    def row_grads(self, out: Array, y: Array) -> Array:
        return (out - self.targets(y, out.shape[1])) * self._per_row(out)

    def config(self) -> dict[str, Any]:
        return {"outputs": self.outputs} if self.outputs != "sum" else {}


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
        outputs: ``"mean"`` (default) averages a row's outputs, as above;
            ``"sum"`` adds them (the mean over the batch of the summed
            per-output losses: scikit-learn's multilabel log loss).
    """

    def __init__(self, from_logits: bool = True, eps: float = 1e-7, outputs="mean"):
        self.from_logits = bool(from_logits)
        self.eps = float(eps)
        self.outputs = _outputs_mode(outputs)

    def _per_row(self, out: Array) -> float:
        return 1.0 / out.shape[1] if self.outputs == "mean" else 1.0

    def _elements(self, out: Array, y: Array) -> Array:
        """Each element's loss ``(batch, outputs)``."""
        xp = self.xp
        if self.from_logits:
            z = out
            return self.ops.relu(z) - z * y + xp.log1p(xp.exp(-xp.abs(z)))
        p = self.ops.clip(out, self.eps, 1.0 - self.eps)
        return -(y * xp.log(p) + (1.0 - y) * xp.log1p(-p))

    def _mean(self, out: Array, y: Array) -> Array:
        y = self.targets(y, out.shape[1])
        scale = self._per_row(out) / out.shape[0]
        return self.xp.sum(self._elements(out, y)) * scale

    def _mean_grad(self, out: Array, y: Array, scale: float) -> Array:
        y = self.targets(y, out.shape[1])
        step = scale * self._per_row(out) / out.shape[0]
        if self.from_logits:
            g = sigmoid(self.xp, out)
            u = self._inplace(g)
            return u.mul(u.sub(g, y), step)
        p = self.ops.clip(out, self.eps, 1.0 - self.eps)
        return (p - y) / (p * (1.0 - p)) * step

    def row_losses(self, out: Array, y: Array) -> Array:
        elements = self._elements(out, self.targets(y, out.shape[1]))
        return self.xp.sum(elements, axis=1) * self._per_row(out)

    def row_grads(self, out: Array, y: Array) -> Array:
        return self._mean_grad(out, y, float(out.shape[0]))

    def probabilities(self, out: Array) -> Array:
        return sigmoid(self.xp, out) if self.from_logits else out

    def config(self) -> dict[str, Any]:
        extra = {"outputs": self.outputs} if self.outputs != "mean" else {}
        return {"from_logits": self.from_logits, **extra}


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

    def _log_p(self, out: Array) -> Array:
        xp = self.xp
        if self.from_logits:
            shifted = out - self.ops.row_max(out)
            return shifted - xp.log(self.ops.row_sum(xp.exp(shifted)))
        return xp.log(self.ops.clip(out, self.eps, 1.0))

    def _mean(self, out: Array, y: Array) -> Array:
        y = self.targets(y, out.shape[1])
        return -self.xp.sum(y * self._log_p(out)) / out.shape[0]

    def _mean_grad(self, out: Array, y: Array, scale: float) -> Array:
        y = self.targets(y, out.shape[1])
        step = scale / out.shape[0]
        if self.from_logits:
            # softmax(out) - y, times the scale (a backend may fuse it)
            return self.ops.softmax_cross_entropy_grad(out, y, step)
        p = self.ops.clip(out, self.eps, 1.0)
        return -y / p * step

    def row_losses(self, out: Array, y: Array) -> Array:
        y = self.targets(y, out.shape[1])
        return -self.xp.sum(y * self._log_p(out), axis=1)

    def row_grads(self, out: Array, y: Array) -> Array:
        return self._mean_grad(out, y, float(out.shape[0]))

    def probabilities(self, out: Array) -> Array:
        return softmax(self.xp, out) if self.from_logits else out

    def config(self) -> dict[str, Any]:
        return {"from_logits": self.from_logits}


class PoissonDeviance(Loss):
    """Half the Poisson deviance, on log-means: ``out`` is ``z = log mu``.

    ``l_n = sum_k exp(z_nk) - y_nk z_nk + y_nk log y_nk - y_nk`` (the last two
    terms make a perfect fit 0; ``0 log 0 = 0``) and ``L = (1/batch) sum_n
    l_n``, so ``dL/dz = (exp(z) - y) / batch``: scikit-learn's ``poisson``
    loss of ``MLPRegressor`` (an exponential output activation). Targets are
    non-negative counts or rates; :meth:`probabilities` (what ``predict``
    returns) is ``exp(z)``.

    Args:
        outputs: ``"sum"`` (default, scikit-learn's) adds a row's outputs;
            ``"mean"`` averages them.
    """

    def __init__(self, outputs: str = "sum"):
        self.outputs = _outputs_mode(outputs)

    def _per_row(self, out: Array) -> float:
        return 1.0 / out.shape[1] if self.outputs == "mean" else 1.0

    def _elements(self, out: Array, y: Array) -> Array:
        xp = self.xp
        positive = y > 0
        y_log_y = xp.where(positive, y * xp.log(xp.where(positive, y, 1.0)), 0.0)
        return xp.exp(out) - y * out + y_log_y - y

    def _mean(self, out: Array, y: Array) -> Array:
        y = self.targets(y, out.shape[1])
        scale = self._per_row(out) / out.shape[0]
        return self.xp.sum(self._elements(out, y)) * scale

    def _mean_grad(self, out: Array, y: Array, scale: float) -> Array:
        y = self.targets(y, out.shape[1])
        step = scale * self._per_row(out) / out.shape[0]
        return (self.xp.exp(out) - y) * step

    def row_losses(self, out: Array, y: Array) -> Array:
        elements = self._elements(out, self.targets(y, out.shape[1]))
        return self.xp.sum(elements, axis=1) * self._per_row(out)

    def row_grads(self, out: Array, y: Array) -> Array:
        return self._mean_grad(out, y, float(out.shape[0]))

    def probabilities(self, out: Array) -> Array:
        return self.xp.exp(out)

    def config(self) -> dict[str, Any]:
        return {"outputs": self.outputs} if self.outputs != "sum" else {}


LOSSES: dict[str, type[Loss]] = {
    "cross_entropy": CrossEntropy,
    "mse": MeanSquaredError,
    "bce": BinaryCrossEntropy,
    "poisson": PoissonDeviance,
}
_ALIASES = {
    "categorical_cross_entropy": "cross_entropy",
    "categorical_crossentropy": "cross_entropy",
    "crossentropy": "cross_entropy",
    "ce": "cross_entropy",
    "mean_squared_error": "mse",
    "binary_cross_entropy": "bce",
    "binary_crossentropy": "bce",
    "poisson_deviance": "poisson",
}


def get_loss(name: str | Loss) -> Loss:
    """A loss from its name: ``cross-entropy``, ``mse``, ``bce`` or
    ``poisson`` (all on logits or log-means where that applies), or a
    :class:`Loss` instance, returned as is."""
    if isinstance(name, Loss):
        return name
    key = str(name).strip().lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    try:
        return LOSSES[key]()
    except KeyError:
        choices = ", ".join(k.replace("_", "-") for k in LOSSES)
        raise XpnetError(f"unknown loss {name!r}: choose one of {choices}") from None
