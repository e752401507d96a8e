"""Backend-specific fast paths behind one interface, with a generic reference.

The core (layers, optimizers, the training step) calls these few operations
through ``backend.ops``. :class:`Ops` implements each with the Array API
standard alone: it is the reference, and what every namespace without a
native path runs (array-api-strict, PyTorch, CuPy). A backend where a
measurement showed a faster native form subclasses it (NumPy: see
:mod:`xpnet.native_numpy`), in the style of array-api-extra's delegation:
one native path per backend, a generic fallback. Every subclass must give the
same numbers as the reference (tests/test_fastpaths.py checks it).

The step itself is the third extension point: :meth:`Ops.make_step` may return
a replacement for the whole training step (e.g. a captured CUDA graph); the
generic :class:`~xpnet.training.TrainStep` runs where it returns ``None``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import array_api_compat

from .arraytypes import Array, Device, Namespace
from .inplace import InPlace

if TYPE_CHECKING:
    from .model import Sequential
    from .optimizers import Optimizer
    from .parameters import Parameters

#: a training step: ``(xb, yb) -> (loss, outputs)``, all on the device
StepFn = Callable[[Array, Array], tuple[Array, Array]]

__all__ = ["Ops", "StepFn"]


class Ops:
    """Generic implementations, written with the Array API standard only.

    Args:
        xp: the namespace; device: where allocations go.
        on_cpu: whether arrays live in host memory, where denormal floats are
            slow (GPUs flush them to zero in hardware).
    """

    name = "generic"
    #: the training loop gathers the rows of X about this many bytes (whole
    #: batches) at a time, then slices: few gathers (kernel launches) per step
    gather_bytes = 4 << 20

    def __init__(self, xp: Namespace, device: Device, on_cpu: bool) -> None:
        self.xp = xp
        self.device = device
        self.on_cpu = on_cpu

    def keep(self, x: Array, mask: Array) -> Array:
        """``x`` where ``mask`` holds, else 0 (same shape as ``x``)."""
        return self.xp.where(mask, x, 0.0)

    def relu(self, x: Array) -> Array:
        """``max(x, 0)``, NaN kept. A ``where`` with a Python scalar: no
        scalar array is made per call (array-api-compat's torch ``maximum``
        copies a scalar to the device, a host sync on CUDA)."""
        return self.xp.where(x < 0.0, 0.0, x)

    def relu_grad(self, grad: Array, y: Array) -> Array:
        """The gradient through a ReLU: ``grad`` where its output ``y > 0``,
        else 0 (both ``(batch, n)``)."""
        return self.keep(grad, y > 0.0)

    def softmax_cross_entropy_grad(
        self, out: Array, targets: Array, scale: float
    ) -> Array:
        """``(softmax(out) - targets) * scale`` for logits ``out: (batch,
        classes)`` and float targets of the same shape, with the row maximum
        subtracted before ``exp``; 7 whole-array operations, in place where
        the namespace allows."""
        e = self.xp.exp(out - self.row_max(out))
        u = InPlace(self.xp, array_api_compat.is_writeable_array(e))
        p = u.div(e, self.row_sum(e))
        return u.mul(u.sub(p, targets), scale)

    def negative_part(self, x: Array) -> Array:
        """``min(x, 0)``, NaN kept (see :meth:`relu`)."""
        return self.xp.where(x > 0.0, 0.0, x)

    def clip(self, x: Array, low: float, high: float) -> Array:
        """``x`` limited to ``[low, high]``, NaN kept, with two ``where``: the
        compat ``clip`` of CuPy indexes with boolean masks (a host sync)."""
        xp = self.xp
        return xp.where(x < low, low, xp.where(x > high, high, x))

    def select(self, mask: Array, a: Array | float, b: Array | float) -> Array:
        """``a`` where ``mask`` holds, else ``b`` (arrays or Python floats)."""
        return self.xp.where(mask, a, b)

    def row_max(self, x: Array) -> Array:
        """``max(x, axis=1)`` of ``x: (batch, n)``, kept as ``(batch, 1)``."""
        return self.xp.max(x, axis=1, keepdims=True)

    def row_sum(self, x: Array) -> Array:
        """``sum(x, axis=1)`` of ``x: (batch, n)``, kept as ``(batch, 1)``."""
        return self.xp.sum(x, axis=1, keepdims=True)

    def argmax_hits(self, x: Array, labels: Array) -> Array:
        """How many rows of ``x: (batch, n)`` have their arg-max (the first
        maximum) at the integer ``labels: (batch,)``; a 0-d int64 array."""
        xp = self.xp
        return xp.sum(xp.astype(xp.argmax(x, axis=1) == labels, xp.int64))

    def rows_buffer(self, rows: int, x: Array) -> Array | None:
        """A ``(rows, features)`` buffer for :meth:`take_rows` to gather rows of
        ``x: (samples, features)`` into, or ``None`` where gathers make new
        arrays (the generic path: the standard's ``take`` has no ``out=``)."""
        return None

    def take_rows(self, x: Array, rows: Array, out: Array | None = None) -> Array:
        """``x[rows]``: the rows of ``x: (samples, features)`` at the integer
        indices ``rows: (m,)`` (all in range), ``(m, features)``. ``out``: an
        ``(m, features)`` buffer from :meth:`rows_buffer` that a backend may
        write into and return instead of a new array."""
        return self.xp.take(x, rows, axis=0)

    def matmul_into(self, out: Array, a: Array, b: Array) -> Array:
        """``out[...] = a @ b``; returns ``out``."""
        out[...] = a @ b
        return out

    def sum_rows_into(self, out: Array, x: Array) -> Array:
        """``out[...] = sum(x, axis=0)`` for ``x: (batch, n)``; returns ``out``."""
        out[...] = self.xp.sum(x, axis=0)
        return out

    def flush_denormals(self, buffers: dict[str, Array]) -> None:
        """Set values below the smallest normal float to zero, in ``buffers``.

        Optimizer state of dead units decays into the denormal range, where
        ``0.9 * v`` rounds back to ``v`` and CPUs compute slowly forever
        (measured: 5x slower NumPy epochs). GPUs are unaffected: a no-op there.
        """
        if not self.on_cpu:
            return
        xp = self.xp
        for key, buf in buffers.items():
            tiny = xp.finfo(buf.dtype).smallest_normal
            buffers[key] = xp.where(xp.abs(buf) < tiny, 0.0, buf)

    def apply_update(
        self, optimizer: Optimizer, params: Parameters, *, prescaled: bool
    ) -> None:
        """One optimizer update over the flat buffers (a backend may fuse it)."""
        optimizer.apply(params, self, prescaled=prescaled)

    def make_step(self, model: Sequential, **options: Any) -> StepFn | None:
        """A backend-specific whole training step, or ``None`` for the generic."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name})"
