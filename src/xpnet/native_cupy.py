"""CuPy's native fast paths (an edge module: it imports cupy).

On a GPU a small model's step costs its kernel launches (~5-10 us each, far
more than the arithmetic), so each method computes what
:class:`xpnet.fastpaths.Ops` computes in fewer launches:

- ``matmul``/``sum`` write straight into the flat gradient buffer (``out=``):
  the generic op-then-copy is 2 launches and a temporary each;
- ReLU forward and backward are one elementwise kernel each (the generic
  ``where`` of a comparison is 2);
- the softmax cross-entropy gradient is 4 launches (row max, ``exp(z - max)``,
  row sum, ``(e / sum - y) * scale`` in place) instead of 7;
- the SGD-momentum update (``v = mu v - g; w += v``) and the Adam update are
  one kernel each over the flat buffers, instead of 3 and ~13.

The kernels are ``cupy.ElementwiseKernel`` (compiled by NVRTC on first use,
then cached on disk). Their formulas are the reference's, operation by
operation; the compiler may contract a product and a sum into one FMA, so
results can differ from the generic path by an ulp (tests/test_gpu_cupy.py
compares them on a GPU). On first use per device the kernels are run once on
a few numbers against the generic path; where that fails (a toolkit that
cannot compile them), this backend logs why once and runs the generic path.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

import cupy

from .arraytypes import Array
from .fastpaths import Ops
from .optimizers import SGD, Adam

if TYPE_CHECKING:
    from .optimizers import Optimizer
    from .parameters import Parameters

__all__ = ["CupyOps"]
log = logging.getLogger("xpnet")

#: ``max(x, 0)`` with NaN kept, as the reference's ``where(x < 0, 0, x)``
RELU = cupy.ElementwiseKernel("T x", "T y", "y = x < (T)0 ? (T)0 : x", "xpnet_relu")
#: the gradient through a ReLU from its output ``y``: ``g`` where ``y > 0``
RELU_GRAD = cupy.ElementwiseKernel(
    "T g, T y", "T dx", "dx = y > (T)0 ? g : (T)0", "xpnet_relu_grad"
)
#: ``exp(z - m)``, ``m`` the row maxima ``(batch, 1)`` (broadcast)
EXP_SHIFTED = cupy.ElementwiseKernel(
    "T z, T m", "T e", "e = exp(z - m)", "xpnet_exp_shifted"
)
#: ``e = (e / s - t) * scale`` in place: softmax minus targets, scaled
SOFTMAX_MINUS_TARGETS = cupy.ElementwiseKernel(
    "T s, T t, T scale", "T e", "e = (e / s - t) * scale", "xpnet_softmax_minus"
)
#: SGD with momentum, the step already times lr: ``v = mu v - g; w += v``
SGD_MOMENTUM = cupy.ElementwiseKernel(
    "T g, T mu", "T v, T w", "v = v * mu - g; w = w + v", "xpnet_sgd_momentum"
)
#: Adam (see :class:`xpnet.optimizers.Adam`), with host scalars ``a1 = 1 - b1``,
#: ``a2 = 1 - b2``, ``c2 = 1 / sqrt(1 - b2^t)``, ``c1 = lr / (1 - b1^t)``
ADAM = cupy.ElementwiseKernel(
    "T g, T b1, T a1, T b2, T a2, T c2, T eps, T c1",
    "T m, T v, T w",
    "m = m * b1 + a1 * g; v = v * b2 + a2 * (g * g); "
    "w = w - m / (sqrt(v) * c2 + eps) * c1",
    "xpnet_adam",
)

#: device id -> "" when the kernels agreed with the generic path there, else why
_checked: dict[int, str] = {}


class CupyOps(Ops):
    name = "cupy"

    def __init__(self, xp: Any, device: Any, on_cpu: bool) -> None:
        super().__init__(xp, device, on_cpu)
        index = int(getattr(device, "id", 0))
        if index not in _checked:
            _checked[index] = self._self_check()
            if _checked[index]:
                log.warning(
                    "cuda:%d: xpnet's CuPy kernels failed their check (%s); "
                    "running the generic Array API path",
                    index,
                    _checked[index],
                )
        #: why the native kernels are not used here ("" when they are)
        self.fallback = _checked[index]

    def _self_check(self) -> str:
        """Run every kernel once on a few numbers against the generic path;
        ``""`` when they agree, else what went wrong."""
        generic = Ops(self.xp, self.device, self.on_cpu)
        try:
            with self.device:
                z = cupy.asarray([[1.5, -2.0, 0.0], [-0.5, 3.0, 0.25]], "float32")
                t = cupy.asarray([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]], "float32")
                pairs = [
                    (self._relu(z), generic.relu(z)),
                    (self._relu_grad(z, z), generic.relu_grad(z, z)),
                    (
                        self._xent(z, t, 0.5),
                        generic.softmax_cross_entropy_grad(z, t, 0.5),
                    ),
                ]
                for got, want in pairs:
                    if not bool(cupy.allclose(got, want, rtol=1e-6, atol=1e-7)):
                        return f"{got.tolist()} != {want.tolist()}"
        except Exception as exc:  # e.g. NVRTC missing or refusing a kernel
            return f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
        return ""

    def relu(self, x: Array) -> Array:
        return super().relu(x) if self.fallback else self._relu(x)

    def relu_grad(self, grad: Array, y: Array) -> Array:
        return super().relu_grad(grad, y) if self.fallback else self._relu_grad(grad, y)

    def softmax_cross_entropy_grad(
        self, out: Array, targets: Array, scale: float
    ) -> Array:
        if self.fallback:
            return super().softmax_cross_entropy_grad(out, targets, scale)
        return self._xent(out, targets, scale)

    def matmul_into(self, out: Array, a: Array, b: Array) -> Array:
        return cupy.matmul(a, b, out=out)

    def sum_rows_into(self, out: Array, x: Array) -> Array:
        return cupy.sum(x, axis=0, out=out)

    def apply_update(
        self, optimizer: Optimizer, params: Parameters, *, prescaled: bool
    ) -> None:
        kind = _fused_kind(optimizer, params, prescaled)
        if self.fallback or kind is None:
            super().apply_update(optimizer, params, prescaled=prescaled)
            return
        lr = optimizer.begin_apply(params, prescaled)
        grad, slots = params.gather_grads(), optimizer.slots
        if kind == "sgd":
            assert isinstance(optimizer, SGD)
            SGD_MOMENTUM(grad, optimizer.momentum, slots["velocity"], params.flat)
            return
        assert isinstance(optimizer, Adam)
        b1, b2, t = optimizer.beta1, optimizer.beta2, optimizer.iterations
        ADAM(
            grad,
            b1,
            1.0 - b1,
            b2,
            1.0 - b2,
            1.0 / math.sqrt(1.0 - b2**t),
            optimizer.eps,
            lr / (1.0 - b1**t),
            slots["m"],
            slots["v"],
            params.flat,
        )

    @staticmethod
    def _relu(x: Array) -> Array:
        return RELU(x)

    @staticmethod
    def _relu_grad(grad: Array, y: Array) -> Array:
        return RELU_GRAD(grad, y)

    @staticmethod
    def _xent(out: Array, targets: Array, scale: float) -> Array:
        e = EXP_SHIFTED(out, cupy.max(out, axis=1, keepdims=True))
        return SOFTMAX_MINUS_TARGETS(
            cupy.sum(e, axis=1, keepdims=True), targets, scale, e
        )

    def __repr__(self) -> str:
        if self.fallback:
            return f"CupyOps(cupy, generic path: {self.fallback})"
        return "CupyOps(cupy)"


def _fused_kind(
    optimizer: Optimizer, params: Parameters, prescaled: bool
) -> str | None:
    """``"sgd"`` or ``"adam"`` where one kernel does the update, else None:
    plain momentum SGD on pre-scaled gradients, Adam without weight decay,
    both in place on writeable buffers."""
    if not params.writeable or optimizer.inplace is False:
        return None
    if type(optimizer) is SGD:
        plain = optimizer.momentum and not optimizer.nesterov
        return "sgd" if plain and prescaled and not optimizer.weight_decay else None
    if type(optimizer) is Adam and not optimizer.weight_decay:
        return "adam"
    return None
