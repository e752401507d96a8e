"""Augmented operations that work on every namespace, like array-api-extra's ``at()``.

An update rule written with :class:`InPlace` runs in place where the arrays
can be written (NumPy, CuPy, PyTorch, array-api-strict: no allocation) and as
new arrays elsewhere, with the same numbers: one rule, no twin code paths.
"""

from __future__ import annotations

from .arraytypes import Array, Namespace

__all__ = ["InPlace"]


class InPlace:
    """``x op= y`` that works on every namespace, like array-api-extra's ``at()``.

    Each method returns the result, which is ``x`` itself (written in place)
    when ``writeable``, else a new array; callers always use the return value.
    ``*_prefix`` methods act on ``x[:stop]`` only (the weight-decayed part of a
    flat buffer).
    """

    def __init__(self, xp: Namespace, writeable: bool) -> None:
        self.xp = xp
        self.writeable = writeable

    def add(self, x: Array, y: Array | float) -> Array:
        if self.writeable:
            x += y
            return x
        return x + y

    def sub(self, x: Array, y: Array | float) -> Array:
        if self.writeable:
            x -= y
            return x
        return x - y

    def mul(self, x: Array, y: Array | float) -> Array:
        if self.writeable:
            x *= y
            return x
        return x * y

    def div(self, x: Array, y: Array | float) -> Array:
        if self.writeable:
            x /= y
            return x
        return x / y

    def add_prefix(self, x: Array, stop: int, y: Array) -> Array:
        if self.writeable:
            head = x[:stop]
            head += y
            return x
        return self.xp.concat([x[:stop] + y, x[stop:]], axis=0)

    def mul_prefix(self, x: Array, stop: int, y: float) -> Array:
        if self.writeable:
            head = x[:stop]
            head *= y
            return x
        return self.xp.concat([x[:stop] * y, x[stop:]], axis=0)
