"""The CUDA path's logic, checked without a GPU.

What these tests can prove: that every allocation and kernel of the public
entry points happens with the backend's device current (CuPy allocates on
the *current* device and array-api-compat's CuPy namespace ignores
``device=``), that a CuPy which imports but cannot compile kernels is refused
when the device is chosen, and that import failures are reported as they are.
What they cannot prove: that real CuPy kernels run, or their speed.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import sys
import types
from dataclasses import dataclass
from typing import Any

import array_api_compat.numpy as np_xp
import numpy as np
import pytest

import xpnet
from xpnet import backend as backend_module
from xpnet.backend import Backend

CREATION = (
    "asarray",
    "zeros",
    "ones",
    "empty",
    "full",
    "arange",
    "zeros_like",
    "ones_like",
    "empty_like",
    "concat",
    "stack",
    "eye",
    "linspace",
)


class _Namespace:
    """NumPy's namespace, refusing to allocate unless the device is current."""

    def __init__(self, state: dict[str, Any]) -> None:
        self._state = state

    def __getattr__(self, name: str) -> Any:
        value = getattr(np_xp, name)
        if name not in CREATION:
            return value

        def allocate(*args: Any, **kwargs: Any) -> Any:
            if not self._state["current"]:
                raise AssertionError(f"{name} ran without the device current")
            return value(*args, **kwargs)

        return allocate


@dataclass(frozen=True)
class _DeviceCheckingBackend(Backend):
    state: dict[str, Any] = None  # type: ignore[assignment]

    def context(self) -> contextlib.AbstractContextManager[Any]:
        @contextlib.contextmanager
        def current() -> Any:
            before = self.state["current"]
            self.state["current"] = True
            try:
                yield
            finally:
                self.state["current"] = before

        return current()


def _checking_backend() -> _DeviceCheckingBackend:
    state = {"current": False}
    return _DeviceCheckingBackend("numpy", _Namespace(state), "cpu", "cpu", state=state)


def test_every_entry_point_allocates_with_the_device_current():
    backend = _checking_backend()
    rng = np.random.default_rng(0)
    X = rng.random((40, 5)).astype(np.float32)
    y = rng.integers(0, 3, 40)
    model = xpnet.mlp([5, 8, 3], device=backend, seed=0)  # build
    model.fit(X, y, epochs=2, batch_size=16, validation_data=(X, y))
    model.evaluate(X, y)
    model.predict(X)
    model.predict_proba(X[:3])
    model.load_state_dict(model.state_dict())
    with backend.context():
        xb, yb = model.to_device(X[:8], "float32"), model.to_device(y[:8])
    model.train_step(xb, yb)
    assert backend.state["current"] is False


def test_an_allocation_outside_the_context_is_caught():
    backend = _checking_backend()
    with pytest.raises(AssertionError, match="zeros ran without the device"):
        backend.xp.zeros(3)


# -- CuPy that is broken in the ways users meet ---------------------------------
class _RefuseImport(importlib.abc.MetaPathFinder):
    def __init__(self, error: ImportError) -> None:
        self.error = error

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name == "cupy":
            raise self.error
        return None


@pytest.fixture
def cupy_import_fails(monkeypatch):
    monkeypatch.delitem(sys.modules, "cupy", raising=False)
    finder = _RefuseImport(
        ImportError("libcudart.so.12: cannot open shared object file")
    )
    monkeypatch.setattr(sys, "meta_path", [finder, *sys.meta_path])
    backend_module.probe_cupy.cache_clear()


def test_a_cupy_that_fails_to_import_is_reported_as_such(cupy_import_fails):
    cupy, count, reason = backend_module.cupy_gpu_count()
    assert cupy is None and count == 0
    assert reason.startswith("CuPy failed to import (ImportError: libcudart.so.12")
    with pytest.raises(xpnet.DeviceError, match="libcudart.so.12"):
        xpnet.resolve("cuda")


def _cupy_without_toolkit() -> types.ModuleType:
    """A CuPy that imports and sees one GPU but cannot compile a kernel."""
    cupy = types.ModuleType("cupy")

    class Device:
        def __init__(self, index: int = 0) -> None:
            self.id = index

        def __enter__(self) -> Device:
            return self

        def __exit__(self, *exc: Any) -> None:
            return None

    def arange(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(
            "CuPy failed to load libnvrtc.so.12: OSError: libnvrtc.so.12: "
            "cannot open shared object file"
        )

    runtime = types.SimpleNamespace(getDeviceCount=lambda: 1)
    cupy.cuda = types.SimpleNamespace(Device=Device, runtime=runtime)  # type: ignore[attr-defined]
    cupy.arange = arange  # type: ignore[attr-defined]
    cupy.float32 = np.float32  # type: ignore[attr-defined]
    return cupy


@pytest.fixture
def cupy_without_toolkit(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", _cupy_without_toolkit())
    backend_module.probe_cupy.cache_clear()
    yield
    backend_module.probe_cupy.cache_clear()


def test_a_cupy_that_cannot_compile_kernels_is_refused(cupy_without_toolkit, caplog):
    with pytest.raises(xpnet.DeviceError, match="libnvrtc") as info:
        xpnet.resolve("cuda")
    assert "\n" not in str(info.value)
    assert "xpnet[cuda12]" in str(info.value)
    # auto falls back to the CPU, saying why.
    chosen = xpnet.resolve("auto")
    assert chosen.name == "numpy" and "libnvrtc" in chosen.notice
