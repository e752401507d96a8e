"""Shared fixtures: the ``backend`` fixture runs a test on every Array API
namespace that is available here, and skips the others saying why."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

# scikit-learn's array-API dispatch (tests/test_sklearn.py) needs SciPy's array
# API support, which SciPy reads once, when it is first imported.
os.environ.setdefault("SCIPY_ARRAY_API", "1")

import pytest

import xpnet
from xpnet.errors import DeviceError

# ../shared beside the checkout; XPNET_TEST_SHARED names another folder of the
# same layout (bench/gpu_check.sh: the .gpu-data/ carried to a lent GPU)
SHARED = Path(
    os.environ.get("XPNET_TEST_SHARED")
    or Path(__file__).resolve().parents[2] / "shared"
)
MNIST_DIR = SHARED / "data" / "mnist"

# name -> (device, backend)
BACKENDS = {
    "numpy": ("cpu", "numpy"),
    "array_api_strict": ("cpu", "array-api-strict"),
    # array-api-strict on a device that is not its default: any allocation that
    # does not name the device lands on the default one, and mixing the two
    # fails, as arrays on two GPUs would (cuda:1 vs cuda:0).
    "array_api_strict_device1": ("cpu", "array-api-strict"),
    "torch": ("cpu", "torch"),
    "cupy": ("cuda", "cupy"),
}


def _skip_reason(name: str) -> str | None:
    module = {
        "array_api_strict": "array_api_strict",
        "array_api_strict_device1": "array_api_strict",
    }.get(name, name)
    if importlib.util.find_spec(module) is None:
        return f"{name} is not installed"
    device, backend = BACKENDS[name]
    try:
        xpnet.resolve(device, backend)
    except DeviceError as exc:
        return f"{name} cannot run here: {exc}"
    return None


def make_backend(name: str) -> xpnet.Backend:
    reason = _skip_reason(name)
    if reason:
        pytest.skip(reason)
    backend = xpnet.resolve(*BACKENDS[name])
    if name == "array_api_strict_device1":
        import array_api_strict

        device = array_api_strict.Device("device1")
        return xpnet.Backend(backend.name, backend.xp, device, "cpu")
    return backend


@pytest.fixture(params=[*BACKENDS, "fake_cupy_cuda1"])
def backend(request) -> xpnet.Backend:
    """Every backend: numpy, array_api_strict, torch (if installed), cupy (GPU),
    and CuPy's stand-in (tests/fake_cupy.py) on its second GPU."""
    if request.param == "fake_cupy_cuda1":
        import fake_cupy

        from xpnet import backend as backend_module

        backend_module.probe_cupy.cache_clear()
        request.addfinalizer(backend_module.probe_cupy.cache_clear)
        fake_cupy.install(request.getfixturevalue("monkeypatch"))
        chosen = xpnet.resolve("cuda:1")
        # The tests call layers and optimizers directly, which (as on a real
        # GPU) must run with the device current; the public entry points that
        # enter it themselves are tested in test_fake_cupy.py.
        context = chosen.context()
        context.__enter__()
        request.addfinalizer(lambda: context.__exit__(None, None, None))
        return chosen
    return make_backend(request.param)


@pytest.fixture
def numpy_backend() -> xpnet.Backend:
    return xpnet.resolve("cpu", "numpy")


@pytest.fixture(params=["array_api_strict", "array_api_strict_device1"])
def strict_backend(request) -> xpnet.Backend:
    """array-api-strict on its default device and on another one."""
    return make_backend(request.param)


@pytest.fixture(scope="session")
def mnist_subset():
    """The real MNIST data in ../shared: (x_train, y_train, x_test, y_test),
    pixels scaled to [0, 1] float32, labels int64."""
    from xpnet.idx import read_idx

    if not MNIST_DIR.is_dir():
        pytest.skip(f"real MNIST files not found at {MNIST_DIR}")
    x_train = read_idx(MNIST_DIR / "train-5k-images-idx3-ubyte.gz")
    y_train = read_idx(MNIST_DIR / "train-5k-labels-idx1-ubyte.gz")
    x_test = read_idx(MNIST_DIR / "t10k-images-idx3-ubyte.gz")
    y_test = read_idx(MNIST_DIR / "t10k-labels-idx1-ubyte.gz")
    scale = lambda x: (x.reshape(len(x), -1) / 255.0).astype("float32")  # noqa: E731
    return (
        scale(x_train),
        y_train.astype("int64"),
        scale(x_test),
        y_test.astype("int64"),
    )


def pytest_terminal_summary(terminalreporter):
    from gradcheck import GRADCHECK_ERRORS

    if GRADCHECK_ERRORS:
        worst = max(GRADCHECK_ERRORS.items(), key=lambda kv: kv[1])
        terminalreporter.write_line(
            f"gradient checks: {len(GRADCHECK_ERRORS)} checked, largest relative "
            f"error {worst[1]:.2e} ({worst[0]})"
        )
