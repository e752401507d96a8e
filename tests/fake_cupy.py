"""A NumPy-backed stand-in for CuPy with two fake GPUs, for the tests only.

This module *is* the fake ``cupy``: :func:`install` puts it in ``sys.modules``
(with ``cupy.cuda``, ``cupy.linalg``, ``cupy.fft``) and gives
``array_api_compat.cupy`` built over it, so xpnet runs its real CuPy lines.
It follows CuPy's documented behaviour where xpnet depends on it:

- ``cuda.runtime``: two devices (``getDeviceCount() == 2``), their properties,
  ``memGetInfo()`` of the *current* device, CUDA runtime and driver versions;
- ``cuda.Device(i)``: a context manager that makes GPU ``i`` current
  (``.id``, ``.use()``, ``.synchronize()``; ``Device()`` is the current one);
  ``cuda.get_current_stream().synchronize()`` syncs the current device;
- :class:`ndarray` remembers the device it was allocated on (the current one)
  and views keep their base's. It is *not* a ``numpy.ndarray`` subclass:
  array-api-compat would take a subclass for NumPy (namespace and device).
  Implicit conversion to NumPy raises CuPy's TypeError; ``.get()`` copies out;
- every kernel (namespace function, operator, non-view method, fancy
  indexing, ``__setitem__``) runs on the current device and refuses an array
  that lives on another with CuPy's ValueError for devices without peer
  access (``_check_peer_access`` in cupy/_core/_kernel.pyx); a host NumPy
  array in a kernel is a TypeError, as in CuPy. ``*_like`` functions are
  checked as kernels, which is stricter than CuPy (it allocates them on the
  current device, wherever the template lives);
- ``from_dlpack`` refuses CPU producers with CuPy's TypeError and keeps a
  GPU producer's device;
- ``ElementwiseKernel(in_params, out_params, operation, name)``: one launch
  that evaluates the C operation with NumPy, for the small subset of C that
  xpnet's kernels use (``T`` typed parameters, statements ``a = expr;``, one
  ``c ? x : y`` per statement, ``(T)`` casts, ``exp``/``sqrt``/``log``,
  arithmetic and comparisons); anything else raises NotImplementedError,
  so a kernel the stand-in cannot read fails loudly instead of passing.

- ``cupyx.allow_synchronize(False)``: inside it, every host-device
  synchronisation (``get``, ``float()``/``int()``/``bool()``, ``item``,
  ``tolist``, a stream or device ``synchronize``) raises
  ``cupyx.DeviceSynchronized``, as in CuPy.

Records for the tests: :data:`launches` (device id, kernel name) per kernel,
:data:`allocations` per device id, :data:`synced` device ids whose stream was
synchronised. Everything computes with NumPy on the host.

:func:`install` swaps it in for one test; :func:`write_import_shim` writes
``cupy``/``cupyx`` packages that make it *the* CuPy of another process (the
end-to-end test of ``bench/gpu_check.sh``).
"""

from __future__ import annotations

import collections
import contextlib
import functools
import importlib
import re
import sys
import types
from typing import Any

import numpy as np

__version__ = "14.0.0"  # the first release with the [ctk] extra
N_DEVICES = 2
_current = [0]  # the current device id (CuPy keeps it per thread)
launches: list[tuple[int, str]] = []
allocations: collections.Counter[int] = collections.Counter()
synced: list[int] = []
PEER_ERROR = (
    "The device where the array resides ({}) is different from the current "
    "device ({}). Peer access is unavailable between these devices."
)


_sync_allowed = [True]  # cupyx.allow_synchronize (CuPy keeps it per thread)


def reset() -> None:
    """Device 0 current, records empty, synchronisation allowed."""
    _current[0] = 0
    launches.clear()
    allocations.clear()
    synced.clear()
    _sync_allowed[0] = True


class DeviceSynchronized(RuntimeError):
    """``cupyx.DeviceSynchronized``."""


def _host_sync() -> None:
    """A host-device synchronisation: refused inside allow_synchronize(False)."""
    if not _sync_allowed[0]:
        raise DeviceSynchronized(
            "Device synchronization was detected while disallowed."
        )


@contextlib.contextmanager
def allow_synchronize(allow: bool) -> Any:
    """``cupyx.allow_synchronize``: allow or refuse syncs inside the block."""
    outer = _sync_allowed[0]
    _sync_allowed[0] = bool(allow)
    try:
        yield
    finally:
        _sync_allowed[0] = outer


cupyx = types.ModuleType("cupyx")
cupyx.allow_synchronize = allow_synchronize  # type: ignore[attr-defined]
cupyx.DeviceSynchronized = DeviceSynchronized  # type: ignore[attr-defined]


class CUDARuntimeError(RuntimeError):
    pass


class Device:
    """``cupy.cuda.Device``: compares by id; entering makes it current."""

    def __init__(self, device: Any = None) -> None:
        self.id = _current[0] if device is None else int(device)
        if not 0 <= self.id < N_DEVICES:
            raise CUDARuntimeError("cudaErrorInvalidDevice: invalid device ordinal")
        self._outer: list[int] = []

    def __int__(self) -> int:
        return self.id

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Device) and other.id == self.id

    def __hash__(self) -> int:
        return hash(("cuda", self.id))

    def __repr__(self) -> str:
        return f"<CUDA Device {self.id}>"

    def __enter__(self) -> Device:
        self._outer.append(_current[0])
        _current[0] = self.id
        return self

    def __exit__(self, *exc: object) -> None:
        _current[0] = self._outer.pop()

    def use(self) -> None:
        _current[0] = self.id

    def synchronize(self) -> None:
        _host_sync()
        synced.append(self.id)


def _properties(index: int) -> dict[str, Any]:
    Device(index)  # validates the index
    return {"name": f"Fake GPU {index}".encode(), "major": 9, "minor": 0}


runtime = types.SimpleNamespace(
    CUDARuntimeError=CUDARuntimeError,
    getDeviceCount=lambda: N_DEVICES,
    getDevice=lambda: _current[0],
    setDevice=lambda i: Device(i).use(),
    getDeviceProperties=_properties,
    # free memory tells the devices apart: GPU i has 40 + 10 i GiB free of 80
    memGetInfo=lambda: ((40 + 10 * _current[0]) * 2**30, 80 * 2**30),
    runtimeGetVersion=lambda: 12040,
    driverGetVersion=lambda: 12080,
    deviceCanAccessPeer=lambda a, b: 0,
)
cuda = types.ModuleType("cupy.cuda")
cuda.device = types.ModuleType("cupy.cuda.device")  # type: ignore[attr-defined]
cuda.device.Device = cuda.Device = Device  # type: ignore[attr-defined]
cuda.runtime = runtime  # type: ignore[attr-defined]
# the current device's stream: synchronising it is all the stand-in models
cuda.get_current_stream = Device  # type: ignore[attr-defined]


def _new(data: Any, device: Device, allocated: bool = True) -> ndarray:
    if allocated:
        allocations[device.id] += 1
    return ndarray(np.asarray(data), device)


def _unwrap(value: Any, found: list[ndarray]) -> Any:
    if isinstance(value, ndarray):
        found.append(value)
        return value._data
    if isinstance(value, np.ndarray) and value.ndim:
        raise TypeError(f"Unsupported type {type(value)}")
    if type(value) in (list, tuple):
        return type(value)(_unwrap(v, found) for v in value)
    if type(value) is dict:  # keyword arguments, out= included
        return {k: _unwrap(v, found) for k, v in value.items()}
    return value


def _wrap(value: Any, device: Device, inputs: list[ndarray]) -> Any:
    if isinstance(value, np.ndarray | np.generic):
        same = [a for a in inputs if a._data is value]  # in place: out=, +=
        return same[0] if same else _new(value, device)
    if type(value) in (list, tuple):
        return type(value)(_wrap(v, device, inputs) for v in value)
    return value


def _kernel(func: Any, name: str) -> Any:
    """``func`` as a CuPy kernel: launched on the current device, which every
    array argument must live on."""

    def launch(*args: Any, **kwargs: Any) -> Any:
        inputs: list[ndarray] = []
        args, kwargs = _unwrap(args, inputs), _unwrap(kwargs, inputs)
        here = _current[0]
        for array in inputs:
            if array.device.id != here:
                raise ValueError(PEER_ERROR.format(array.device.id, here))
        launches.append((here, name))
        return _wrap(func(*args, **kwargs), Device(here), inputs)

    return launch


_C_FUNCTIONS = {"exp": np.exp, "sqrt": np.sqrt, "log": np.log, "where": np.where}


def _c_expression(text: str) -> str:
    """One C expression of the subset above as Python (NumPy) source."""
    if re.search(r"&&|\|\||!(?!=)|\+\+|--|\[|\bfloat\b|\bdouble\b|\?.*\?", text):
        raise NotImplementedError(f"the CuPy stand-in cannot evaluate {text!r}")
    text = re.sub(r"\(T\)\s*([\w.]+)", r"_T(\1)", text)
    ternary = re.fullmatch(r"(.+?)\?(.+):(.+)", text.strip())
    if ternary:
        text = "where({}, {}, {})".format(*ternary.groups())
    return text


class ElementwiseKernel:
    """``cupy.ElementwiseKernel``: the operation evaluated with NumPy on the
    broadcast arguments, one launch; outputs given are written in place."""

    def __init__(
        self,
        in_params: str,
        out_params: str,
        operation: str,
        name: str = "kernel",
        **options: Any,
    ) -> None:
        def params(text: str) -> list[str]:
            parsed = [p.split() for p in text.split(",")]
            if any(len(p) != 2 or p[0] != "T" for p in parsed):
                raise NotImplementedError(f"only 'T name' parameters: {text!r}")
            return [p[1] for p in parsed]

        self.inputs, self.outputs = params(in_params), params(out_params)
        self.name = name
        self.statements = []
        for statement in filter(str.strip, operation.split(";")):
            target, sign, value = statement.partition("=")
            if not sign or target.strip() not in self.outputs:
                raise NotImplementedError(f"only 'output = expr': {statement!r}")
            code = compile(_c_expression(value).strip(), name, "eval")
            self.statements.append((target.strip(), code))

    def __call__(self, *args: Any) -> Any:
        return _kernel(self._run, self.name)(*args)

    def _run(self, *args: Any) -> Any:
        n_in = len(self.inputs)
        arrays = [a for a in args if isinstance(a, np.ndarray)]
        dtype = arrays[0].dtype.type
        values = {
            k: v if isinstance(v, np.ndarray) else dtype(v)
            for k, v in zip(self.inputs, args[:n_in], strict=True)
        }
        given = list(args[n_in:])
        shape = np.broadcast_shapes(
            *(np.shape(v) for v in values.values()), *(np.shape(g) for g in given)
        )
        outs = given + [np.zeros(shape, dtype) for _ in self.outputs[len(given) :]]
        values.update(zip(self.outputs, outs, strict=True))
        scope = {"_T": dtype, **_C_FUNCTIONS}
        for target, code in self.statements:
            result = eval(code, scope, dict(values))  # noqa: S307 - our own kernels
            out = values[target]
            out[...] = result
        return outs[0] if len(outs) == 1 else tuple(outs)


def _is_basic(key: Any) -> bool:
    keys = key if type(key) is tuple else (key,)
    return all(
        k is None or k is Ellipsis or isinstance(k, slice | int | np.integer)
        for k in keys
    ) and not any(isinstance(k, bool) for k in keys)


class ndarray:  # noqa: N801 - CuPy's name
    """``cupy.ndarray``: host data plus the device it lives on."""

    __array_ufunc__ = None  # NumPy's operators defer to ours
    __hash__ = None  # type: ignore[assignment]

    def __init__(self, data: np.ndarray, device: Device) -> None:
        self._data, self.device = data, device

    def _view(self, data: Any) -> ndarray:
        return _new(data, self.device, allocated=False)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "_data":  # no __array_interface__
            raise AttributeError(name)
        attr = getattr(self._data, name)
        if name in ("reshape", "transpose", "view", "squeeze", "ravel"):
            return lambda *a, **k: self._view(attr(*a, **k))
        if name in ("item", "tolist", "tobytes"):  # device-to-host copies
            _host_sync()
            return attr
        if callable(attr):
            return functools.partial(_kernel(getattr(np.ndarray, name), name), self)
        return self._view(attr) if isinstance(attr, np.ndarray) else attr

    def get(self, stream: Any = None, order: str = "C", out: Any = None) -> Any:
        """A host copy, from any current device (as CuPy's ``get``)."""
        _host_sync()
        if out is not None:
            out[...] = self._data
            return out
        return np.array(self._data, order=order, copy=True)

    def __array__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            "Implicit conversion to a NumPy array is not allowed. "
            "Please use `.get()` to construct a NumPy array explicitly."
        )

    def __dlpack_device__(self) -> tuple[int, int]:
        return (2, self.device.id)  # kDLCUDA

    def __dlpack__(self, **kwargs: Any) -> Any:
        raise BufferError("the stand-in's fake device memory cannot be exported")

    def __getitem__(self, key: Any) -> Any:
        if _is_basic(key):
            return self._view(self._data[key])
        return _kernel(np.ndarray.__getitem__, "getitem")(self, key)

    def __setitem__(self, key: Any, value: Any) -> None:
        _kernel(np.ndarray.__setitem__, "setitem")(self, key, value)

    def __iter__(self) -> Any:
        return (self[i] for i in range(len(self)))

    def __len__(self) -> int:
        return len(self._data)

    def __float__(self) -> float:
        _host_sync()
        return float(self._data)

    def __int__(self) -> int:
        _host_sync()
        return int(self._data)

    def __bool__(self) -> bool:
        _host_sync()
        return bool(self._data)

    def __repr__(self) -> str:
        return f"array({self._data.tolist()!r}, device={self.device.id})"


_BINARY = "add sub mul truediv floordiv mod pow matmul and or xor lshift rshift"
for _op in _BINARY.split():
    for _name in (f"__{_op}__", f"__r{_op}__", f"__i{_op}__"):
        setattr(ndarray, _name, _kernel(getattr(np.ndarray, _name), _name))
for _name in "lt le gt ge eq ne neg pos abs invert".split():
    _dunder = f"__{_name}__"
    setattr(ndarray, _dunder, _kernel(getattr(np.ndarray, _dunder), _dunder))


def _from_host(func: Any) -> Any:
    """``asarray``/``array``: host data is copied to the current device; an
    array on another device is copied across; one already here is kept."""

    def create(obj: Any, *args: Any, **kwargs: Any) -> Any:
        here = Device()
        if isinstance(obj, ndarray) and obj.device == here:
            out = func(obj._data, *args, **kwargs)
            return obj if out is obj._data else _new(out, here)
        data = obj._data if isinstance(obj, ndarray) else obj
        return _new(np.array(func(data, *args, **kwargs), copy=True), here)

    return create


asarray, array = _from_host(np.asarray), _from_host(np.array)


def from_dlpack(x: Any, *, device: Any = None, copy: Any = None) -> ndarray:
    if isinstance(x, ndarray):  # a zero-copy import keeps the producer's device
        return x._view(x._data)
    if x.__dlpack_device__()[0] == 1:  # kDLCPU
        raise TypeError(
            "CPU arrays cannot be directly imported to CuPy. "
            "Use `cupy.array(numpy.from_dlpack(input))` instead."
        )
    raise TypeError(f"Unsupported array type: {x.__dlpack_device__()[0]}")


_VIEWS = ("reshape", "transpose", "expand_dims", "squeeze", "swapaxes", "moveaxis")


def _namespace(source: types.ModuleType, prefix: str = "") -> Any:
    """A module ``__getattr__``: NumPy's functions as kernels, the rest as is."""

    @functools.cache
    def lookup(name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        value = getattr(source, name)
        if isinstance(value, type | types.ModuleType) or not callable(value):
            return value
        if name in _VIEWS:
            return lambda x, *a, **k: x._view(value(x._data, *a, **k))
        return _kernel(value, prefix + name)

    return lookup


linalg = types.ModuleType("cupy.linalg")
linalg.__getattr__ = _namespace(np.linalg, "linalg.")  # type: ignore[method-assign]
linalg.__all__ = list(np.linalg.__all__)  # type: ignore[attr-defined]
fft = types.ModuleType("cupy.fft")
fft.__getattr__ = _namespace(np.fft, "fft.")  # type: ignore[method-assign]
fft.__all__ = list(np.fft.__all__)  # type: ignore[attr-defined]
__getattr__ = _namespace(np)
__all__ = [
    n
    for n in np.__all__
    if not n.startswith("__") and not isinstance(getattr(np, n), types.ModuleType)
]
__all__ += ["linalg", "fft", "cuda"]
_MODULES = {"cupy.cuda": cuda, "cupy.cuda.device": cuda.device}
_MODULES.update({"cupy.linalg": linalg, "cupy.fft": fft})


@functools.cache
def _compat_modules() -> dict[str, types.ModuleType]:
    """``array_api_compat.cupy`` and its submodules, imported once over this
    module (its namespace lookups are cached per array class, so one copy)."""
    import array_api_compat

    def ours(name: str) -> bool:
        return name.split(".")[0] == "cupy" or name.startswith("array_api_compat.cupy")

    saved = {k: sys.modules.pop(k) for k in list(sys.modules) if ours(k)}
    had = array_api_compat.__dict__.get("cupy")
    sys.modules.update({"cupy": sys.modules[__name__], **_MODULES})
    try:
        importlib.import_module("array_api_compat.cupy")
        return {
            k: v
            for k, v in sys.modules.items()
            if k.startswith("array_api_compat.cupy")
        }
    finally:
        for key in [k for k in sys.modules if ours(k)]:
            del sys.modules[key]
        sys.modules.update(saved)
        if had is None:
            array_api_compat.__dict__.pop("cupy", None)
        else:
            array_api_compat.cupy = had


def install(monkeypatch: Any) -> types.ModuleType:
    """Make ``import cupy`` and ``array_api_compat.cupy`` this stand-in until
    ``monkeypatch`` is undone; device 0 current, records empty."""
    import array_api_compat

    compat = _compat_modules()
    ours = {"cupy": sys.modules[__name__], "cupyx": cupyx, **_MODULES, **compat}
    for key, module in ours.items():
        monkeypatch.setitem(sys.modules, key, module)
    monkeypatch.setattr(
        array_api_compat, "cupy", compat["array_api_compat.cupy"], raising=False
    )
    reset()
    return sys.modules[__name__]


def become_cupy() -> None:
    """Make this module ``cupy`` (and ``cupyx``) for the rest of the process:
    what the shim of :func:`write_import_shim` runs on ``import cupy``."""
    sys.modules.update({"cupy": sys.modules[__name__], "cupyx": cupyx, **_MODULES})


def write_import_shim(folder: Any) -> None:
    """Write ``cupy`` and ``cupyx`` packages into ``folder`` that, imported
    with this file's directory also on ``sys.path``, replace themselves with
    the stand-in: put ``folder`` and ``tests/`` on ``PYTHONPATH`` and a child
    process's ``import cupy`` is this module."""
    from pathlib import Path

    for name in ("cupy", "cupyx"):
        package = Path(folder) / name
        package.mkdir(parents=True, exist_ok=True)
        (package / "__init__.py").write_text(
            "# the NumPy-backed CuPy stand-in (tests/fake_cupy.py) as this package\n"
            "import fake_cupy\n\nfake_cupy.become_cupy()\n"
        )
