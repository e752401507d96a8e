"""Names for what the core passes around, so signatures say what things are.

The Array API standard defines these as protocols that no library exports
as types yet, so each alias stands for ``Any`` to a type checker; to a reader
it says which kind of object is meant.
"""

from __future__ import annotations

from typing import Any, TypeAlias

#: an array of any Array API namespace (NumPy, CuPy, torch, array-api-strict)
Array: TypeAlias = Any
#: an Array API namespace module, as ``array_api_compat.array_namespace`` gives
Namespace: TypeAlias = Any
#: a namespace's device object (``"cpu"``, ``cupy.cuda.Device(1)``, ...)
Device: TypeAlias = Any
#: a NumPy array on the host (edges only: RNG, file I/O, reporting)
HostArray: TypeAlias = Any
#: a ``numpy.random.Generator`` on the host, the one source of randomness
HostRNG: TypeAlias = Any
#: what public entry points accept as data: host data (NumPy arrays, nested
#: lists) or any namespace's array, moved to the model's device on entry
ArrayLike: TypeAlias = Any

__all__ = ["Array", "ArrayLike", "Device", "HostArray", "HostRNG", "Namespace"]
