"""Device and backend selection: the one module that imports array libraries.

A :class:`Backend` pairs an Array API namespace ``xp`` with a device. It is
resolved once, at a public entry point (``Sequential(...)``, ``xpnet train``),
and then passed down; the core modules never import NumPy or CuPy themselves.

Devices: ``"cpu"`` (NumPy by default), ``"cuda"`` / ``"cuda:N"`` (CuPy by
default), ``"auto"`` (CUDA when CuPy and a working GPU are present, else the
CPU with a one-line notice, logged once per process). Backends: ``numpy``,
``cupy``, ``torch``, ``array-api-strict``.

Arrays leave the device through :func:`to_numpy` only, and enter it through
:meth:`Backend.asarray`.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import logging
from dataclasses import dataclass, field
from typing import Any

import array_api_compat
import numpy as np

from .arraytypes import Device, Namespace
from .errors import DeviceError, XpnetError
from .fastpaths import Ops

log = logging.getLogger("xpnet")

#: the auto-device notices logged so far (each is logged once per process)
_logged_notices: set[str] = set()

BACKENDS = ("numpy", "cupy", "torch", "array-api-strict")
DEVICES = ("auto", "cpu", "cuda", "cuda:N")
DTYPES = ("float32", "float64")

_CUDA_EXTRA_HINT = (
    "install the CUDA extra matching your driver: "
    "pip install 'xpnet[cuda12]' (CUDA 12) or 'xpnet[cuda13]' (CUDA 13)"
)


@dataclass(frozen=True)
class Backend:
    """An Array API namespace bound to one device.

    Attributes:
        name: one of :data:`BACKENDS`.
        xp: the Array API namespace (``array_api_compat`` wrapper or strict).
        device: the namespace's device object, passed to every allocation.
        device_name: ``"cpu"`` or ``"cuda:N"``, as a person writes it.
        notice: a one-line remark about how the device was chosen, or ``""``.
    """

    name: str
    xp: Any = field(repr=False)
    device: Any
    device_name: str
    notice: str = ""

    @property
    def is_gpu(self) -> bool:
        return self.device_name.startswith("cuda")

    def context(self) -> contextlib.AbstractContextManager[Any]:
        """Make this backend's device the current one while the block runs.

        CuPy allocates and launches every kernel on the *current* device, and
        array-api-compat's CuPy namespace ignores ``device=`` in creation
        functions, so without this ``cuda:1`` would put biases, optimizer state
        and kernels on GPU 0. The public entry points (building a model, fit,
        evaluate, predict, loading state, moving data) enter it; it is a no-op
        for the other backends, whose allocations name their device.
        """
        if self.name == "cupy":
            return self.device  # a cupy.cuda.Device is a context manager
        if self.name == "torch" and self.is_gpu:
            import torch

            return torch.cuda.device(self.device)
        return contextlib.nullcontext()

    def quiet_float_errors(
        self, quiet: bool = True
    ) -> contextlib.AbstractContextManager[Any]:
        """While the block runs, NumPy's overflow/invalid warnings are off
        (when ``quiet``): for callers that check the results for NaN/inf
        themselves and say so in one line. A no-op for the other backends."""
        if quiet and self.name == "numpy":
            return np.errstate(
                over="ignore", invalid="ignore", under="ignore", divide="ignore"
            )
        return contextlib.nullcontext()

    @functools.cached_property
    def ops(self) -> Ops:
        """The fast paths the core calls (native where one exists, else generic)."""
        return ops_for(self.xp, self.device, on_cpu=not self.is_gpu)

    def dtype(self, name: str) -> Any:
        """The namespace's dtype object for ``"float32"`` or ``"float64"``."""
        if name not in DTYPES:
            raise XpnetError(
                f"unknown dtype {name!r}: choose one of {', '.join(DTYPES)}"
            )
        return getattr(self.xp, name)

    def asarray(self, host: Any, dtype: str | None = None) -> Any:
        """Copy a host array (NumPy or anything ``numpy.asarray`` takes) here.

        Always a copy, on every backend, so in-place updates never write into
        the caller's arrays. The conversion to ``dtype`` happens on the host
        first, so every backend starts from bit-identical values.
        """
        arr = np.array(host, dtype=dtype, copy=True, order="C")
        if self.name == "numpy":
            return arr
        if self.name == "array-api-strict":
            return self.xp.asarray(arr, device=self.device)
        if self.name == "cupy":
            with self.device:
                return self.xp.asarray(arr)
        return self.xp.asarray(arr, device=self.device)

    def from_dlpack(self, x: Any) -> Any:
        """``x`` (another namespace's array) here through DLPack, or ``None``.

        ``None`` when the exchange is impossible (different device kinds) or
        pointless (host NumPy data, which :meth:`asarray` copies and casts).
        """
        if array_api_compat.is_numpy_array(x) or not hasattr(x, "__dlpack__"):
            return None
        try:
            with self.context():
                moved = self.xp.from_dlpack(x)
        except (TypeError, ValueError, RuntimeError, BufferError, AttributeError):
            return None
        return moved if self.owns(moved) else None

    def owns(self, x: Any) -> bool:
        """Whether ``x`` is already an array of this namespace on this device."""
        try:
            xp = array_api_compat.array_namespace(x)
        except TypeError:
            return False
        if xp is not self.xp:
            return False
        # Device objects compare with ==: "cpu" (NumPy), array_api_strict.Device,
        # torch.device (always with an index here, "cuda:N"), cupy.cuda.Device.
        return bool(array_api_compat.device(x) == self.device)

    def synchronize(self) -> None:
        """Wait for queued device work (for timing); a no-op on the CPU."""
        if self.name == "cupy":
            import cupy

            with self.device:  # the current stream of *this* device
                cupy.cuda.get_current_stream().synchronize()
        elif self.name == "torch" and self.is_gpu:
            import torch

            torch.cuda.synchronize(self.device)

    def describe(self) -> str:
        """One line for logs: backend, device and, on a GPU, its name."""
        text = f"backend={self.name} device={self.device_name}"
        gpu = gpu_name(self)
        return f"{text} ({gpu})" if gpu else text

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # The namespace is a module (pickle refuses those): a pickle holds the
        # backend's name and device, and loading resolves them again.
        return restore_backend, backend_identity(self)


def backend_identity(backend: Backend) -> tuple[str, str, str | None, str]:
    """``(name, device_name, strict_device, notice)``: plain data from which
    :func:`restore_backend` resolves the same backend again (``strict_device``:
    array-api-strict's device name, which ``device_name`` calls ``"cpu"``)."""
    strict_device = None
    if backend.name == "array-api-strict":
        strict_device = str(getattr(backend.device, "_device", "CPU_DEVICE"))
    return backend.name, backend.device_name, strict_device, backend.notice


def restore_backend(
    name: str, device_name: str, strict_device: str | None = None, notice: str = ""
) -> Backend:
    """The :class:`Backend` that :func:`backend_identity` described, resolved
    afresh by name and device (a :class:`~xpnet.errors.DeviceError` when that
    device is not usable here)."""
    found = resolve(device_name, name)
    device = found.device
    if strict_device is not None:
        device = found.xp.Device(strict_device)
    return Backend(found.name, found.xp, device, found.device_name, notice=notice)


def ops_for(xp: Namespace, device: Device, on_cpu: bool | None = None) -> Ops:
    """The fast paths for namespace ``xp``: NumPy's or CuPy's native ones,
    else the generic reference."""
    if on_cpu is None:
        # CuPy arrays live on a GPU; torch says where through device.type.
        on_cpu = not array_api_compat.is_cupy_namespace(xp) and (
            getattr(device, "type", "cpu") != "cuda"
        )
    if array_api_compat.is_numpy_namespace(xp):
        from .native_numpy import NumpyOps

        return NumpyOps(xp, device, on_cpu=True)
    if array_api_compat.is_cupy_namespace(xp):
        from .native_cupy import CupyOps

        return CupyOps(xp, device, on_cpu=False)
    return Ops(xp, device, on_cpu=on_cpu)


def to_numpy(x: Any, copy: bool = False) -> np.ndarray:
    """The single exit to the host: any backend's array as a NumPy array.

    CPU backends may hand back a view of their memory; ``copy=True``
    guarantees the result shares nothing with ``x``.
    """
    if array_api_compat.is_cupy_array(x):
        return x.get()  # a device-to-host copy already
    if isinstance(x, np.ndarray) or array_api_compat.is_numpy_array(x):
        host = np.asarray(x)
    elif array_api_compat.is_torch_array(x):
        host = x.detach().cpu().numpy()
    else:
        try:
            host = np.from_dlpack(x)
        except (TypeError, BufferError, RuntimeError):
            host = np.asarray(x)
    return np.array(host, copy=True) if copy else host


def namespace_of(*arrays: Any) -> Any:
    """The Array API namespace of ``arrays`` (looked up once by callers)."""
    return array_api_compat.array_namespace(*arrays)


def backend_of(x: Any) -> Backend:
    """The :class:`Backend` that array ``x`` lives on (its namespace and
    device), e.g. for a loss called on arrays before it was built."""
    xp = namespace_of(x)
    device = array_api_compat.device(x)
    if array_api_compat.is_numpy_namespace(xp):
        return Backend("numpy", xp, device, "cpu")
    if array_api_compat.is_cupy_namespace(xp):
        return Backend("cupy", xp, device, f"cuda:{device.id}")
    if array_api_compat.is_torch_namespace(xp):
        on_gpu = device.type == "cuda"
        where = f"cuda:{device.index or 0}" if on_gpu else "cpu"
        return Backend("torch", xp, device, where)
    return Backend("array-api-strict", xp, device, "cpu")


def parse_device(device: str) -> tuple[str, int]:
    """Split ``"cpu" | "cuda" | "cuda:N" | "auto"`` into (kind, index)."""
    text = str(device).strip().lower()
    if text in ("cpu", "auto", "cuda"):
        return text, 0
    if text.startswith("cuda:"):
        index = text[5:]
        if index.isdigit():
            return "cuda", int(index)
    if text == "gpu":
        return "cuda", 0
    raise DeviceError(
        f"unknown device {device!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N' "
        "(N = GPU index, e.g. cuda:0)"
    )


def _import(module: str, extra_hint: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise DeviceError(f"{module} is not installed ({exc}); {extra_hint}") from None


def cupy_gpu_count() -> tuple[Any, int, str]:
    """(cupy module or None, usable GPU count, reason when none is usable)."""
    try:
        import cupy
    except ModuleNotFoundError as exc:
        if exc.name == "cupy":
            return None, 0, "CuPy is not installed"
        return None, 0, f"CuPy failed to import ({type(exc).__name__}: {exc})"
    except Exception as exc:  # e.g. ImportError: libcudart.so missing
        return None, 0, f"CuPy failed to import ({type(exc).__name__}: {exc})"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return cupy, 0, f"CuPy found no usable GPU ({_one_line(exc)})"
    if count == 0:
        return cupy, 0, "CuPy found no GPU"
    failure = probe_cupy(0)
    if failure:
        return cupy, 0, failure
    return cupy, count, ""


@functools.cache
def probe_cupy(index: int) -> str:
    """Run a tiny elementwise kernel and a tiny matmul on GPU ``index``; ``""``
    when they work, else why not (once per process and device).

    A CuPy wheel without the CUDA toolkit imports and counts GPUs but fails at
    its first kernel (``CuPy failed to load libnvrtc``): better to say so when
    the device is chosen than in the middle of training.
    """
    try:
        import cupy

        with cupy.cuda.Device(index):
            a = cupy.arange(4, dtype=cupy.float32).reshape(2, 2)
            b = a * 2.0 + 1.0  # compiles an elementwise kernel (NVRTC)
            c = a @ b  # cuBLAS
            float(c.sum())
    except Exception as exc:
        return (
            f"CuPy cannot run kernels on cuda:{index} ({_one_line(exc)}); the "
            "xpnet[cuda12]/[cuda13] extras install the CUDA toolkit it needs"
        )
    return ""


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}"


def _resolve_cuda(backend: str, index: int) -> Backend:
    name = f"cuda:{index}"
    if backend == "cupy":
        cupy, count, reason = cupy_gpu_count()
        if cupy is None and "not installed" in reason:
            raise DeviceError(
                f"device {name!r} needs CuPy, which is not installed; "
                + _CUDA_EXTRA_HINT
            )
        if count == 0:
            raise DeviceError(
                f"device {name!r} is not usable: {reason}; use --device cpu (or auto)"
            )
        if index >= count:
            raise DeviceError(
                f"device {name!r} does not exist: this machine has "
                f"{count} GPU(s), cuda:0..cuda:{count - 1}"
            )
        failure = probe_cupy(index)
        if failure:
            raise DeviceError(f"device {name!r} is not usable: {failure}")
        import array_api_compat.cupy as cupy_xp

        return Backend("cupy", cupy_xp, cupy.cuda.Device(index), name)
    if backend == "torch":
        torch = _import("torch", "pip install torch (a CUDA build) for this backend")
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device {name!r} is not usable: PyTorch sees no CUDA "
                "GPU; use --device cpu"
            )
        if index >= torch.cuda.device_count():
            raise DeviceError(
                f"device {name!r} does not exist: PyTorch sees "
                f"{torch.cuda.device_count()} GPU(s)"
            )
        import array_api_compat.torch as torch_xp

        return Backend("torch", torch_xp, torch.device(name), name)
    raise DeviceError(
        f"backend {backend!r} cannot run on {name!r}: "
        "use backend cupy or torch for CUDA devices"
    )


def _resolve_cpu(backend: str) -> Backend:
    if backend == "numpy":
        import array_api_compat.numpy as numpy_xp

        return Backend("numpy", numpy_xp, "cpu", "cpu")
    if backend == "torch":
        torch = _import("torch", "pip install torch to use the torch backend")
        import array_api_compat.torch as torch_xp

        return Backend("torch", torch_xp, torch.device("cpu"), "cpu")
    if backend == "array-api-strict":
        strict = _import(
            "array_api_strict", "pip install array-api-strict to use this backend"
        )
        return Backend("array-api-strict", strict, strict.Device("CPU_DEVICE"), "cpu")
    raise DeviceError(
        f"backend {backend!r} cannot run on the CPU: use numpy, "
        "torch or array-api-strict"
    )


def _normalise_backend(backend: str | None) -> str | None:
    if backend is None:
        return None
    name = str(backend).strip().lower().replace("_", "-")
    if name in ("strict", "array-api-strict"):
        return "array-api-strict"
    if name not in BACKENDS:
        raise DeviceError(
            f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}"
        )
    return name


def resolve(device: str | Backend = "auto", backend: str | None = None) -> Backend:
    """Resolve a device string and optional backend name to a :class:`Backend`.

    ``device``: ``"auto" | "cpu" | "cuda" | "cuda:N"`` (or a resolved Backend,
    returned as is). ``backend``: ``None`` picks NumPy for the CPU and CuPy for
    CUDA. Raises :class:`~xpnet.errors.DeviceError` with a one-line message when
    the request cannot be met.
    """
    name = _normalise_backend(backend)
    if isinstance(device, Backend):
        if name is not None and name != device.name:
            raise DeviceError(
                f"device= is already a backend ({device.name} on "
                f"{device.device_name}) and backend={backend!r} contradicts it: "
                f"pass device={device.device_name!r}, backend={backend!r}, or the "
                "Backend alone"
            )
        return device
    kind, index = parse_device(device)
    if kind == "cpu":
        return _resolve_cpu(name or "numpy")
    if kind == "cuda":
        return _resolve_cuda(name or "cupy", index)
    # auto: CUDA when it works, else the CPU with a notice.
    if name in (None, "cupy"):
        cupy, count, reason = cupy_gpu_count()
        if count > 0:
            return _resolve_cuda("cupy", 0)
        if name == "cupy":
            # An explicit backend is honoured or refused, never swapped for NumPy.
            raise DeviceError(
                f"backend 'cupy' cannot run here: {reason}; "
                + (_CUDA_EXTRA_HINT if cupy is None else "drop --backend cupy")
            )
    elif name == "torch":
        torch = _import("torch", "pip install torch to use the torch backend")
        if torch.cuda.is_available():
            return _resolve_cuda("torch", 0)
        reason = "PyTorch sees no CUDA GPU"
    else:
        reason = f"backend {name} runs on the CPU"
    chosen = _resolve_cpu("numpy" if name in (None, "cupy") else name)
    notice = f"device auto: {reason}; running on the CPU with {chosen.name}"
    if notice not in _logged_notices:
        # Once per process: a script building many models hears it once. The
        # CLI shows it only when --device auto was typed (see cli.main).
        _logged_notices.add(notice)
        log.warning(notice, extra={"auto_device_notice": True})
    return Backend(chosen.name, chosen.xp, chosen.device, "cpu", notice=notice)


def gpu_facts(devices: list[str] | None = None) -> list[dict[str, Any]]:
    """What CuPy reports of each CUDA device: the one GPU-facts function.

    ``devices``: e.g. ``["cuda:0"]``; ``None`` lists every GPU CuPy sees. Each
    entry has ``device``, ``name``, ``memory_total_gib``, ``memory_free_gib``,
    ``compute_capability``, ``cuda_runtime`` and ``cuda_driver`` (versions as
    ``"13.0"``), or ``device`` and ``error`` where the device cannot be used.
    An empty list when CuPy is missing and no device was asked for.
    """
    cupy, count, reason = cupy_gpu_count()
    if devices is None:
        if cupy is None:
            return []
        devices = [f"cuda:{i}" for i in range(count)]
        if not devices:
            return [{"device": "cuda", "error": reason}]
    facts: list[dict[str, Any]] = []
    for device in devices:
        entry: dict[str, Any] = {"device": device}
        try:
            if count == 0:
                raise DeviceError(reason)
            index = parse_device(device)[1]
            runtime = cupy.cuda.runtime
            props = runtime.getDeviceProperties(index)
            with cupy.cuda.Device(index):
                free, total = runtime.memGetInfo()
            name = props["name"]
            entry.update(
                name=name.decode() if isinstance(name, bytes) else str(name),
                memory_total_gib=round(total / 2**30, 2),
                memory_free_gib=round(free / 2**30, 2),
                compute_capability=f"{props['major']}.{props['minor']}",
                cuda_runtime=_cuda_version(runtime.runtimeGetVersion()),
                cuda_driver=_cuda_version(runtime.driverGetVersion()),
            )
        except Exception as exc:  # facts are reported, never fatal
            entry["error"] = f"{type(exc).__name__}: {exc}"
        facts.append(entry)
    return facts


def _cuda_version(code: int) -> str:
    """CUDA's integer version (e.g. 12040) as ``"12.4"``."""
    return f"{code // 1000}.{code % 1000 // 10}"


def gpu_name(backend: Backend) -> str:
    """The GPU's product name for a CUDA backend, else ``""``."""
    if not backend.is_gpu:
        return ""
    try:
        if backend.name == "cupy":
            import cupy

            props = cupy.cuda.runtime.getDeviceProperties(backend.device.id)
            name = props["name"]
            return name.decode() if isinstance(name, bytes) else str(name)
        import torch

        return torch.cuda.get_device_name(backend.device)
    except Exception:  # a name is decoration; never fail a run for it
        return ""


def available_backends() -> dict[str, str]:
    """Each backend name mapped to its version, or to why it is unavailable."""
    found = {}
    for name, module in (
        ("numpy", "numpy"),
        ("cupy", "cupy"),
        ("torch", "torch"),
        ("array-api-strict", "array_api_strict"),
    ):
        try:
            mod = importlib.import_module(module)
            found[name] = getattr(mod, "__version__", "?")
        except Exception as exc:
            found[name] = f"unavailable ({type(exc).__name__})"
    return found
