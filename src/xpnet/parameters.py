"""A model's parameters in one flat buffer, their gradients in another.

Each layer keeps its ``params`` and ``grads`` dicts, but their arrays are views
(reshaped slices) of two flat ``(size,)`` buffers owned by :class:`Parameters`.
So the optimizer updates the whole model with a handful of whole-buffer
operations instead of a handful per parameter, and the gradients of a step can
be combined across processes in one call.

Layout: parameters that take weight decay (``layer.decay``, the weights) come
first, the others (biases) after, so weight decay is one prefix slice
``flat[:n_decayed]``. Namespaces whose arrays cannot be written (JAX-like) get
new buffers on every update; :meth:`Parameters.replace` then re-slices the
views, which costs no device work.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import array_api_compat

from .arraytypes import Array, Device, Namespace
from .errors import XpnetError

if TYPE_CHECKING:
    from .layers import Layer

__all__ = ["Parameters", "Slot"]


@dataclass(frozen=True)
class Slot:
    """Where one parameter lives in the flat buffers."""

    layer: Layer
    name: str
    index: int  # position in the model's parameter order (checkpoint keys)
    start: int
    stop: int
    shape: tuple[int, ...]


class Parameters:
    """The flat parameter and gradient buffers of ``layers``.

    Args:
        layers: objects with ``params`` and ``grads`` dicts and a ``decay`` set
            (the names that take weight decay); their current parameter arrays
            are copied in, and both dicts are rebound to views.
        xp, device: the namespace and device of the buffers.

    Attributes:
        flat: ``(size,)`` all parameters.
        grads: ``(size,)`` all gradients, written by the layers' ``backward``.
        n_decayed: the length of the decayed prefix of both buffers.
        writeable: whether the buffers are updated in place.
    """

    def __init__(self, layers: Sequence[Layer], xp: Namespace, device: Device) -> None:
        entries = [
            (layer, name) for layer in layers for name in getattr(layer, "params", {})
        ]
        if not entries:
            raise XpnetError("the model has no parameters to optimise")
        first = entries[0][0].params[entries[0][1]]
        self.xp = xp
        self.device = device
        self.dtype = first.dtype
        decayed = [i for i, (layer, n) in enumerate(entries) if n in layer.decay]
        rest = [i for i in range(len(entries)) if i not in set(decayed)]
        slots: list[Slot] = []
        offset = 0
        for i in decayed + rest:
            layer, name = entries[i]
            shape = tuple(layer.params[name].shape)
            size = math.prod(shape)
            slots.append(Slot(layer, name, i, offset, offset + size, shape))
            offset += size
        self.slots = sorted(slots, key=lambda s: s.index)
        self.size = offset
        self.n_decayed = sum(s.stop - s.start for s in slots if s.index in decayed)
        values = [xp.reshape(layer.params[name], (-1,)) for layer, name in entries]
        # One concat of the parameters in layout order: the only copy made.
        order = [s.index for s in sorted(self.slots, key=lambda s: s.start)]
        self.flat = xp.concat([values[i] for i in order], axis=0)
        self.grads = xp.zeros((self.size,), dtype=self.dtype, device=device)
        self.writeable = array_api_compat.is_writeable_array(self.flat)
        # Whether self.grads holds this step's gradients although the layers
        # made new arrays (read-only namespaces): gathered or set this step.
        self._gathered = False
        self._bind_params()
        self._bind_grads()

    def _view(self, buffer: Array, slot: Slot) -> Array:
        return self.xp.reshape(buffer[slot.start : slot.stop], slot.shape)

    def _bind_params(self) -> None:
        for slot in self.slots:
            slot.layer.params[slot.name] = self._view(self.flat, slot)

    def _bind_grads(self) -> None:
        for slot in self.slots:
            slot.layer.grads[slot.name] = self._view(self.grads, slot)
            slot.layer.grads_are_views = self.writeable

    def replace(self, flat: Array) -> None:
        """Adopt ``flat`` as the parameters (after an out-of-place update).

        The update consumed the step's gradients: the next :meth:`gather_grads`
        collects the layers' new ones.
        """
        self._gathered = False
        if flat is not self.flat:
            self.flat = flat
            self._bind_params()

    def gather_grads(self) -> Array:
        """The flat gradient buffer, with every layer's gradient in it.

        Layers write into their views where the buffers are writeable; otherwise
        their (new) gradient arrays are concatenated here, once per step.
        """
        if self.writeable or self._gathered:
            return self.grads
        xp = self.xp
        parts = {s.index: xp.reshape(s.layer.grads[s.name], (-1,)) for s in self.slots}
        ordered = sorted(self.slots, key=lambda s: s.start)
        self.grads = xp.concat([parts[s.index] for s in ordered], axis=0)
        self._gathered = True
        return self.grads

    def set_grads(self, flat: Array) -> None:
        """Use ``flat: (size,)`` as this step's gradients (e.g. all-reduced).

        Where the layers write into views of :attr:`grads`, ``flat`` is copied
        into that buffer (nothing to do when it is that buffer, as after an
        in-place all-reduce), so the views stay valid for the next step.
        """
        if flat is self.grads:
            return
        if tuple(flat.shape) != (self.size,):
            raise XpnetError(
                f"the reduced gradients have shape {tuple(flat.shape)}, the "
                f"model needs ({self.size},)"
            )
        if self.writeable:
            self.grads[...] = flat
        else:
            self.grads = flat
            self._gathered = True

    def views(self, buffer: Array) -> list[Array]:
        """``buffer`` (flat, e.g. an optimizer slot) as one array per parameter,
        in the model's parameter order."""
        return [self._view(buffer, slot) for slot in self.slots]

    def flatten(self, arrays: Sequence[Array]) -> Array:
        """The inverse of :meth:`views`: per-parameter arrays as one flat buffer."""
        xp = self.xp
        ordered = sorted(self.slots, key=lambda s: s.start)
        return xp.concat([xp.reshape(arrays[s.index], (-1,)) for s in ordered], axis=0)

    def load(self, values: Sequence[Array]) -> None:
        """Copy per-parameter arrays (model order, this namespace) into ``flat``."""
        for slot, value in zip(self.slots, values, strict=True):
            if tuple(value.shape) != slot.shape:
                raise XpnetError(
                    f"parameter {slot.index} has shape {tuple(value.shape)}, the "
                    f"model needs {slot.shape}"
                )
        self.replace(self.flatten(values))
