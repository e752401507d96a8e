import sys

import array_api_compat
import array_api_compat.numpy
import numpy as np
import pytest

import xpnet
from xpnet.backend import available_backends, parse_device, resolve


@pytest.fixture
def no_cupy(monkeypatch):
    """Make ``import cupy`` fail, as on a machine without CuPy (GPU or not)."""
    monkeypatch.setitem(sys.modules, "cupy", None)


def test_cpu_means_numpy():
    backend = resolve("cpu")
    assert backend.name == "numpy" and backend.xp is array_api_compat.numpy
    assert type(backend.asarray([1.0])) is np.ndarray
    assert not backend.is_gpu and backend.ops.on_cpu


@pytest.mark.parametrize(
    "text,expected",
    [
        ("cpu", ("cpu", 0)),
        ("cuda", ("cuda", 0)),
        ("cuda:3", ("cuda", 3)),
        ("AUTO", ("auto", 0)),
    ],
)
def test_parse_device(text, expected):
    assert parse_device(text) == expected


@pytest.mark.parametrize("text", ["tpu", "cuda:x", "cuda:-1", "", "metal"])
def test_impossible_device_is_a_clear_error(text):
    with pytest.raises(
        xpnet.DeviceError, match="unknown device.*use 'auto', 'cpu', 'cuda' or 'cuda:N'"
    ) as info:
        resolve(text)
    assert "\n" not in str(info.value)


def test_unknown_backend_lists_choices():
    with pytest.raises(
        xpnet.DeviceError,
        match="unknown backend 'jax': choose one of numpy, cupy, torch",
    ):
        resolve("cpu", "jax")


def test_backend_that_cannot_run_on_the_device():
    with pytest.raises(xpnet.DeviceError, match="backend 'cupy' cannot run on the CPU"):
        resolve("cpu", "cupy")
    with pytest.raises(
        xpnet.DeviceError, match="backend 'numpy' cannot run on 'cuda:0'"
    ):
        resolve("cuda", "numpy")


def test_cuda_without_cupy_names_the_extra(no_cupy):
    with pytest.raises(xpnet.DeviceError) as info:
        resolve("cuda")
    message = str(info.value)
    assert "needs CuPy, which is not installed" in message
    assert "pip install 'xpnet[cuda12]'" in message and "\n" not in message


def test_auto_falls_back_to_cpu_with_a_notice(no_cupy, caplog, monkeypatch):
    # Logged once per process: as if no earlier test had resolved "auto".
    monkeypatch.setattr(xpnet.backend, "_logged_notices", set())
    with caplog.at_level("WARNING", logger="xpnet"):
        backend = resolve("auto")
    assert backend.name == "numpy" and backend.device_name == "cpu"
    assert not backend.is_gpu
    assert backend.notice.startswith(
        "device auto: CuPy is not installed; running on the CPU"
    )
    assert [r.getMessage() for r in caplog.records] == [backend.notice]


def test_round_trip_through_every_backend(backend):
    host = np.arange(12, dtype=np.float32).reshape(3, 4)
    dev = backend.asarray(host)
    assert backend.owns(dev)
    back = xpnet.to_numpy(dev)
    assert back.dtype == np.float32 and np.array_equal(back, host)
    host[0, 0] = 99  # the device copy is independent of the host array
    assert xpnet.to_numpy(dev)[0, 0] == 0
    assert xpnet.to_numpy(dev, copy=True) is not xpnet.to_numpy(dev, copy=True)


def test_owns_compares_namespace_and_device(backend):
    x = backend.asarray(np.ones(3))
    assert backend.owns(x)
    assert array_api_compat.device(x) == backend.device
    assert backend.owns(np.ones(3)) == (backend.name == "numpy")
    assert not backend.owns([1.0, 2.0])


def test_owns_refuses_an_array_on_another_device(strict_backend):
    strict = strict_backend.xp
    other = next(
        d
        for d in (strict.Device("device1"), strict.Device("CPU_DEVICE"))
        if d != strict_backend.device
    )
    x = strict.asarray([1.0, 2.0], device=other)
    assert not strict_backend.owns(x)
    assert strict_backend.owns(strict.asarray([1.0], device=strict_backend.device))


def test_asarray_casts_on_the_host(backend):
    dev = backend.asarray(np.array([0.1, 0.2]), "float32")
    assert xpnet.to_numpy(dev).dtype == np.float32
    assert np.array_equal(xpnet.to_numpy(dev), np.array([0.1, 0.2], np.float32))


def test_model_accepts_arrays_from_another_namespace(strict_backend):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20, 3))
    model = xpnet.mlp([3, 4, 2], device=strict_backend)
    cpu = xpnet.mlp([3, 4, 2], device="cpu")
    model.load_state_dict(cpu.state_dict())
    from_strict = strict_backend.asarray(X)  # moves across namespaces
    np.testing.assert_allclose(
        cpu.predict_proba(from_strict), model.predict_proba(X), rtol=1e-6
    )


def test_available_backends_reports_versions():
    found = available_backends()
    assert found["numpy"] == np.__version__
    assert set(found) == {"numpy", "cupy", "torch", "array-api-strict"}


def test_arrays_cross_namespaces_through_dlpack():
    torch = pytest.importorskip("torch", reason="torch is not installed")
    backend = resolve("cpu", "numpy")
    tensor = torch.arange(6, dtype=torch.float64).reshape(2, 3)
    moved = backend.from_dlpack(tensor)
    assert isinstance(moved, np.ndarray)
    assert np.array_equal(moved, np.arange(6.0).reshape(2, 3))
    assert backend.from_dlpack(np.ones(2)) is None  # host data goes via asarray
    model = xpnet.mlp([3, 4, 2], device=backend)
    np.testing.assert_array_equal(
        model.predict_proba(tensor), model.predict_proba(tensor.numpy())
    )
