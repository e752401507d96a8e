"""Gradient-descent optimisers, in order of increasing complexity.

One base method, :meth:`Optimizer.apply`, updates a model's whole flat
parameter buffer (:class:`~xpnet.parameters.Parameters`) from its flat
gradient buffer by calling the subclass's ``update_step(grad, var, lr, slots,
decayed)``, which holds the update rule, written once (and as code in each
docstring). It is written with the augmented operations of
:class:`InPlace`: in place on namespaces whose arrays can be written (NumPy,
CuPy, PyTorch, array-api-strict), so an update allocates nothing, and as new
arrays on the others, with the same numbers. State ("slots", e.g. momentum)
is one flat buffer per name, created lazily on the first update, on the
parameters' device.

Optimisers consume the gradients: the in-place path scales ``grad`` in place.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .arraytypes import Array
from .errors import XpnetError
from .fastpaths import Ops
from .inplace import InPlace
from .parameters import Parameters
from .schedules import Schedule, as_schedule

if TYPE_CHECKING:
    from .layers import Layer

# Every this many updates, optimizer state below the smallest normal float is
# set to zero on CPUs (see Ops.flush_denormals).
FLUSH_EVERY = 64


class Optimizer:
    """Base class.

    Args:
        lr: a learning rate or a :class:`~xpnet.schedules.Schedule` of the
            update count.
        weight_decay: L2 coefficient, applied to weights (not biases).
        inplace: ``None`` writes in place where the arrays allow it; ``False``
            forces new arrays (the path of read-only namespaces; for tests).
    """

    slot_names: tuple[str, ...] = ()

    #: whether the update is linear in ``lr * grad``, so the caller may fold the
    #: learning rate into the (small) output gradient before backpropagation
    #: instead of scaling every parameter gradient (one pass over all
    #: parameters less per step).
    folds_lr = False

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
        #: multiplies the schedule's rate (ReduceLROnPlateau lowers it); exact
        #: at 1.0, so an untouched run's numbers are the schedule's own
        self.lr_factor = 1.0
        #: slot name -> flat buffer shaped like the parameters
        self.slots: dict[str, Array] = {}
        self._loaded: dict[str, Array] | None = None
        self._prescaled = False
        self._params: Parameters | None = None
        self._layers: list[Layer] | None = None

    @property
    def lr(self) -> float:
        """The learning rate the next update will use."""
        return self.schedule(self.iterations) * self.lr_factor

    def build(self, params: Parameters) -> None:
        """Bind to ``params``: zeroed (or loaded) slots, the write mode."""
        xp = params.xp
        self._params = params
        writeable = params.writeable and self.inplace is not False
        self._update = InPlace(xp, writeable)
        if self._loaded is not None:
            self.slots = {k: params.flatten(v) for k, v in self._loaded.items()}
            self._loaded = None
        elif not self.slots or _size(self.slots) != params.size:
            self.slots = {
                name: xp.zeros((params.size,), dtype=params.dtype, device=params.device)
                for name in self.slot_names
            }

    def apply(
        self, params: Parameters, ops: Ops | None = None, *, prescaled: bool = False
    ) -> None:
        """One update of ``params.flat`` from ``params.grads``.

        Args:
            params: the model's flat buffers; the gradients are consumed.
            ops: the backend's fast paths (for the periodic denormal flush on
                CPUs); ``None`` skips the flush.
            prescaled: the gradients are already multiplied by :attr:`lr`
                (only for optimizers with :attr:`folds_lr`).
        """
        lr = self.begin_apply(params, prescaled)
        grad = params.gather_grads()
        params.replace(
            self.update_step(grad, params.flat, lr, self.slots, params.n_decayed)
        )
        if ops is not None and self.slots and self.iterations % FLUSH_EVERY == 0:
            ops.flush_denormals(self.slots)

    def begin_apply(self, params: Parameters, prescaled: bool) -> float:
        """The bookkeeping of one update, before its arithmetic: bind to
        ``params`` (first use), count the update; returns its learning rate.
        :meth:`apply` and a backend's fused update
        (:meth:`~xpnet.fastpaths.Ops.apply_update`) both start with it."""
        if params is not self._params:
            self.build(params)
        if prescaled and not self.folds_lr:
            raise XpnetError(f"{type(self).__name__} needs unscaled gradients")
        self._prescaled = prescaled
        lr = self.schedule(self.iterations) * self.lr_factor
        self.iterations += 1
        return lr

    def step(self, layers: Sequence[Layer], grads_scaled_by_lr: bool = False) -> None:
        """Update the parameters of ``layers`` from their ``grads`` dicts.

        The convenience form of :meth:`apply` for code that holds layers:
        on first use their parameters move into flat buffers (each
        ``layer.params[name]`` becomes a view), then the gradients found in
        ``layer.grads`` are copied in. :class:`~xpnet.model.Sequential` calls
        :meth:`apply` directly.
        """
        layers = list(layers)
        if self._layers != layers or self._params is None:
            import array_api_compat

            first = next(v for layer in layers for v in layer.params.values())
            from .backend import ops_for

            xp = array_api_compat.array_namespace(first)
            device = array_api_compat.device(first)
            incoming = [dict(layer.grads) for layer in layers]
            params = Parameters(layers, xp, device)
            self._step_ops = ops_for(xp, device)
            for layer, grads in zip(layers, incoming, strict=True):
                layer.grads.update(grads)
            self._layers = layers
            self.build(params)
        bound = self._params
        assert bound is not None
        if bound.writeable:
            for slot, view in zip(bound.slots, bound.views(bound.grads), strict=True):
                given = slot.layer.grads[slot.name]
                if given is not view:
                    view[...] = given
                    slot.layer.grads[slot.name] = view
        self.apply(bound, self._step_ops, prescaled=grads_scaled_by_lr)

    def update_step(
        self, grad: Array, var: Array, lr: float, slots: dict[str, Array], decayed: int
    ) -> Array:
        """Return the updated flat ``var``; ``var[:decayed]`` takes weight decay.

        Write ``slots[name]`` back with the new state (the same object when
        updated in place).
        """
        raise NotImplementedError

    def state(self, params: Parameters | None = None) -> dict[str, Any]:
        """``{"iterations": int, "slot<i>.<name>": array}`` for checkpoints,
        one array per parameter ``i`` in the model's parameter order."""
        out: dict[str, Any] = {"iterations": self.iterations}
        params = params or self._params
        if params is None:
            if self._loaded:
                for key, arrays in self._loaded.items():
                    for i, value in enumerate(arrays):
                        out[f"slot{i}.{key}"] = value
            return out
        for key, buf in self.slots.items():
            for i, view in enumerate(params.views(buf)):
                out[f"slot{i}.{key}"] = view
        return out

    def load_state(self, state: dict[str, Any], to_device: Any) -> None:
        """Restore :meth:`state`; ``to_device`` copies a host array to the device.

        Slots are rebuilt as flat buffers when the optimizer next binds to the
        model's parameters.
        """
        self.iterations = int(state["iterations"])
        count = len({k.split(".")[0] for k in state if k.startswith("slot")})
        self._loaded = (
            {
                name: [to_device(state[f"slot{i}.{name}"]) for i in range(count)]
                for name in self.slot_names
            }
            if self.slot_names and count
            else None
        )
        self.slots = {}
        self._params = None

    def config(self) -> dict[str, Any]:
        return {"weight_decay": self.weight_decay}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}(lr={self.schedule!r}, {args})"


def _size(slots: dict[str, Array]) -> int:
    return next(iter(slots.values())).shape[0] if slots else 0


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

    def update_step(
        self, grad: Array, var: Array, lr: float, slots: dict[str, Array], decayed: int
    ) -> Array:
        u, mu = self._update, self.momentum
        # step = lr * g, with g = grad + weight_decay * w on the weights
        step = grad if self._prescaled else u.mul(grad, lr)
        if self.weight_decay and decayed:
            step = u.add_prefix(step, decayed, (lr * self.weight_decay) * var[:decayed])
        if not mu:
            return u.sub(var, step)
        v = u.sub(u.mul(slots["velocity"], mu), step)  # v = mu * v - step
        slots["velocity"] = v
        if self.nesterov:
            return u.sub(u.add(var, mu * v), step)  # w = w + mu * v - step
        return u.add(var, v)  # w = w + v

    def config(self) -> dict[str, Any]:
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

    def update_step(
        self, grad: Array, var: Array, lr: float, slots: dict[str, Array], decayed: int
    ) -> Array:
        u, b1, b2, t = self._update, self.beta1, self.beta2, self.iterations
        wd = self.weight_decay if decayed else 0.0
        if wd and self.decoupled:
            var = u.mul_prefix(var, decayed, 1.0 - lr * wd)
        elif wd:
            grad = u.add_prefix(grad, decayed, wd * var[:decayed])
        m = u.add(u.mul(slots["m"], b1), (1.0 - b1) * grad)
        g2 = u.mul(grad, grad)
        v = u.add(u.mul(slots["v"], b2), (1.0 - b2) * g2)
        slots["m"], slots["v"] = m, v
        # w -= lr / (1 - b1**t) * m / (sqrt(v) / sqrt(1 - b2**t) + eps)
        denom = u.add(
            u.mul(self._update.xp.sqrt(v), 1.0 / math.sqrt(1.0 - b2**t)), self.eps
        )
        step = u.mul(m / denom, lr / (1.0 - b1**t))
        return u.sub(var, step)

    def config(self) -> dict[str, Any]:
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
