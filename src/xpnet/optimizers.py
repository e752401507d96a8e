"""Gradient-descent optimisers, in order of increasing complexity.

One base loop, :meth:`Optimizer.step`, walks over every parameter of the model
and calls the subclass's ``update_step(grad, var, lr, slots, decay)``, which
holds the update rule (written as code in each docstring). State ("slots",
e.g. momentum buffers) is created lazily on the first step, on the parameter's
device. Where the namespace allows it (NumPy, CuPy, PyTorch,
array-api-strict) updates happen in place with no temporaries beyond the
unavoidable ones; otherwise an out-of-place path computes the same values and
the base loop stores the new arrays.

Optimisers consume the gradients: the in-place path scales ``grad`` in place.
"""

from __future__ import annotations

import math
from typing import Any

import array_api_compat

from .errors import XpnetError
from .schedules import Schedule, as_schedule

# Every this many updates, optimizer state below the smallest normal float is
# set to zero. Momentum buffers of dead units otherwise decay into the
# denormal range, where 0.9 * v rounds back to v and each update runs on slow
# denormal arithmetic forever (measured: 5x slower NumPy epochs).
FLUSH_EVERY = 64


class Optimizer:
    """Base class.

    Args:
        lr: a learning rate or a :class:`~xpnet.schedules.Schedule` of the
            update count.
        weight_decay: L2 coefficient, applied to weights (not biases).
        inplace: ``None`` detects whether the arrays are writeable; ``False``
            forces the out-of-place path (used by the tests).
    """

    slot_names: tuple[str, ...] = ()

    def __init__(
        self,
        lr: float | Schedule = 0.01,
        weight_decay: float = 0.0,
        inplace: bool | None = None,
    ):
        self.schedule = as_schedule(lr)
        self.weight_decay = _non_negative("weight_decay", weight_decay)
        self.inplace = inplace
        self.iterations = 0
        self.slots: list[dict[str, Any]] = []
        self._built = False
        self._prescaled = False

    @property
    def lr(self) -> float:
        """The learning rate the next update will use."""
        return self.schedule(self.iterations)

    def build(self, layers: list[Any]) -> None:
        """Create zeroed slots shaped like each parameter, on its device."""
        self._refs = [(layer, name) for layer in layers for name in layer.params]
        if not self._refs:
            raise XpnetError("the model has no parameters to optimise")
        first = layers[0].params if layers[0].params else self._refs[0][0].params
        sample = next(iter(first.values()))
        self.xp = array_api_compat.array_namespace(sample)
        self.device = array_api_compat.device(sample)
        if self.inplace is None:
            self.inplace = array_api_compat.is_writeable_array(sample)
        xp = self.xp
        if not self.slots:
            self.slots = [
                {s: xp.zeros_like(layer.params[name]) for s in self.slot_names}
                for layer, name in self._refs
            ]
        self._tiny = xp.finfo(sample.dtype).smallest_normal
        self._built = True

    #: whether the update is linear in ``lr * grad``, so the caller may fold the
    #: learning rate into the (small) output gradient before backpropagation
    #: instead of scaling every parameter gradient (one pass over all
    #: parameters less per step).
    folds_lr = False

    def step(self, layers: list[Any], grads_scaled_by_lr: bool = False) -> None:
        """Apply one update to every parameter from the gradients in ``layers``.

        ``grads_scaled_by_lr``: the gradients are already multiplied by
        :attr:`lr` (only for optimizers with :attr:`folds_lr`).
        """
        if not self._built:
            self.build(layers)
        if grads_scaled_by_lr and not self.folds_lr:
            raise XpnetError(f"{type(self).__name__} needs unscaled gradients")
        self._prescaled = grads_scaled_by_lr
        lr = self.schedule(self.iterations)
        self.iterations += 1
        for (layer, name), slots in zip(self._refs, self.slots, strict=True):
            var = layer.params[name]
            new = self.update_step(
                layer.grads[name], var, lr, slots, name in layer.decay
            )
            if new is not var:
                layer.params[name] = new
        if self.slot_names and self.iterations % FLUSH_EVERY == 0:
            self._flush_denormals()

    def update_step(
        self, grad: Any, var: Any, lr: float, slots: dict[str, Any], decay: bool
    ) -> Any:
        """Return the updated ``var`` (the same object when updated in place)."""
        raise NotImplementedError

    def _flush_denormals(self) -> None:
        xp = self.xp
        for slots in self.slots:
            for key, buf in slots.items():
                # A product with the 0/1 mask: faster than where() in NumPy.
                keep = xp.astype(xp.abs(buf) >= self._tiny, buf.dtype)
                slots[key] = buf * keep

    def state(self) -> dict[str, Any]:
        """``{"iterations": int, "slot<i>.<name>": array}`` for checkpoints."""
        out: dict[str, Any] = {"iterations": self.iterations}
        for i, slots in enumerate(self.slots):
            for key, buf in slots.items():
                out[f"slot{i}.{key}"] = buf
        return out

    def load_state(self, state: dict[str, Any], to_device: Any) -> None:
        """Restore :meth:`state`; ``to_device`` copies a host array to the device."""
        self.iterations = int(state["iterations"])
        count = len({k.split(".")[0] for k in state if k.startswith("slot")})
        self.slots = (
            [
                {s: to_device(state[f"slot{i}.{s}"]) for s in self.slot_names}
                for i in range(count)
            ]
            if self.slot_names
            else []
        )
        self._built = False

    def config(self) -> dict[str, Any]:
        return {"weight_decay": self.weight_decay}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}(lr={self.schedule!r}, {args})"


def _non_negative(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise XpnetError(f"{name} must be a non-negative finite number, got {value!r}")
    return value


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum.

    Update rule, with ``g = grad + weight_decay * w`` for weights::

        v = momentum * v - lr * g
        w = w + v                                  # classical momentum
        w = w + momentum * v - lr * g              # nesterov=True

    With a constant learning rate this is exactly PyTorch's ``torch.optim.SGD``
    (``b = momentum * b + g; w -= lr * b``, with ``v = -lr * b``); under a
    schedule, a new rate applies to new gradients only (Sutskever et al. 2013,
    http://proceedings.mlr.press/v28/sutskever13.html).
    """

    def __init__(
        self,
        lr: float | Schedule = 0.01,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        inplace: bool | None = None,
    ):
        super().__init__(lr, weight_decay, inplace)
        self.momentum = _non_negative("momentum", momentum)
        if self.momentum >= 1:
            raise XpnetError(f"momentum must be below 1, got {momentum!r}")
        if nesterov and self.momentum == 0:
            raise XpnetError("nesterov=True needs a momentum above 0")
        self.nesterov = bool(nesterov)
        self.slot_names = ("velocity",) if self.momentum else ()

    folds_lr = True

    def update_step(self, grad, var, lr, slots, decay):
        mu = self.momentum
        wd = lr * self.weight_decay if decay else 0.0
        if not self.inplace:
            step = grad if self._prescaled else lr * grad
            if wd:
                step = step + wd * var
            if not mu:
                return var - step
            v = slots["velocity"] = mu * slots["velocity"] - step
            return var + mu * v - step if self.nesterov else var + v
        # In place, no temporaries: the gradient buffer is ours to scale.
        if not self._prescaled:
            grad *= lr
        if wd:
            grad += wd * var
        if not mu:
            var -= grad
            return var
        v = slots["velocity"]
        v *= mu
        v -= grad
        if self.nesterov:
            var += mu * v
            var -= grad
        else:
            var += v
        return var

    def config(self):
        return {
            "momentum": self.momentum,
            "nesterov": self.nesterov,
            **super().config(),
        }


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015, https://arxiv.org/abs/1412.6980).

    Update rule at step ``t`` (from 1), with ``g = grad + weight_decay * w``::

        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        w = w - lr / (1 - beta1**t) * m / (sqrt(v / (1 - beta2**t)) + eps)

    This is ``torch.optim.Adam``'s arithmetic (eps added after the bias
    correction of ``v``).
    """

    slot_names = ("m", "v")
    decoupled = False

    def __init__(
        self,
        lr: float | Schedule = 0.001,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        inplace: bool | None = None,
    ):
        super().__init__(lr, weight_decay, inplace)
        for name, beta in (("beta1", beta1), ("beta2", beta2)):
            if not 0 <= float(beta) < 1:
                raise XpnetError(f"{name} must be in [0, 1), got {beta!r}")
        self.beta1, self.beta2 = float(beta1), float(beta2)
        self.eps = _non_negative("eps", eps)

    def update_step(self, grad, var, lr, slots, decay):
        b1, b2, t = self.beta1, self.beta2, self.iterations
        wd = self.weight_decay if decay else 0.0
        step_size = lr / (1.0 - b1**t)
        inv_sqrt_bc2 = 1.0 / math.sqrt(1.0 - b2**t)
        xp = self.xp
        if not self.inplace:
            if wd and self.decoupled:
                var = var * (1.0 - lr * wd)
            elif wd:
                grad = grad + wd * var
            m = slots["m"] = b1 * slots["m"] + (1.0 - b1) * grad
            v = slots["v"] = b2 * slots["v"] + (1.0 - b2) * (grad * grad)
            return var - step_size * (m / (xp.sqrt(v) * inv_sqrt_bc2 + self.eps))
        if wd and self.decoupled:
            var *= 1.0 - lr * wd
        elif wd:
            grad += wd * var
        m, v = slots["m"], slots["v"]
        m *= b1
        m += (1.0 - b1) * grad
        grad *= grad
        v *= b2
        v += (1.0 - b2) * grad
        denom = xp.sqrt(v)
        denom *= inv_sqrt_bc2
        denom += self.eps
        update = m / denom
        update *= step_size
        var -= update
        return var

    def config(self):
        return {
            "beta1": self.beta1,
            "beta2": self.beta2,
            "eps": self.eps,
            **super().config(),
        }


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter 2019,
    https://arxiv.org/abs/1711.05101): before the Adam step on weights,
    ``w = w * (1 - lr * weight_decay)``; the gradient is left alone.
    """

    decoupled = True

    def __init__(
        self,
        lr: float | Schedule = 0.001,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        weight_decay: float = 0.01,
        inplace: bool | None = None,
    ):
        super().__init__(lr, beta1, beta2, eps, weight_decay, inplace)


OPTIMIZERS: dict[str, type[Optimizer]] = {"sgd": SGD, "adam": Adam, "adamw": AdamW}


def get_optimizer(name: str | Optimizer, **kwargs: Any) -> Optimizer:
    """An optimiser from its name (``sgd``, ``adam``, ``adamw``) and arguments."""
    if isinstance(name, Optimizer):
        return name
    key = str(name).strip().lower()
    try:
        cls = OPTIMIZERS[key]
    except KeyError:
        raise XpnetError(
            f"unknown optimizer {name!r}: choose one of {', '.join(OPTIMIZERS)}"
        ) from None
    return cls(**kwargs)
