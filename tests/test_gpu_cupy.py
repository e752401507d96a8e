"""On a CUDA GPU with the real CuPy (bench/gpu_check.sh's gpu-tests step runs
this file, and the real-CuPy parameter of the ``backend`` fixture elsewhere):
CuPy's native kernels (xpnet.native_cupy) against the generic Array API
path, training against NumPy, no host sync inside a step, DLPack from torch
CUDA, and xpnet's step in a CUDA graph against the eager one. Skipped where
no GPU is usable. (The end-to-end test of gpu_check.sh runs it on the CuPy
stand-in, which it makes the process's ``cupy``.)
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import xpnet
from xpnet.backend import to_numpy
from xpnet.fastpaths import Ops


def _why_not() -> str | None:
    if importlib.util.find_spec("cupy") is None:
        return "CuPy is not installed"
    try:
        xpnet.resolve("cuda:0", "cupy")
    except xpnet.DeviceError as exc:
        return str(exc)
    return None


pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(_why_not() is not None, reason=str(_why_not())),
]
TOLERANCE = {"float32": 1e-5, "float64": 1e-12}


def _data(n=300, features=20, classes=5):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, features)), rng.integers(0, classes, n)


def _with_generic_ops(backend: xpnet.Backend) -> xpnet.Backend:
    """The same namespace and device with the generic Array API ops."""
    twin = xpnet.Backend(backend.name, backend.xp, backend.device, backend.device_name)
    twin.__dict__["ops"] = Ops(backend.xp, backend.device, on_cpu=False)
    return twin


def test_cupy_kernels_compiled_and_passed_their_check():
    ops = xpnet.resolve("cuda:0").ops
    assert type(ops).__name__ == "CupyOps" and ops.fallback == ""


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cupy_native_ops_give_the_generic_numbers(dtype):
    gpu = xpnet.resolve("cuda:0")
    generic = _with_generic_ops(gpu).ops
    rng = np.random.default_rng(1)
    z = rng.normal(size=(256, 10)).astype(dtype)
    z[0, :3] = [np.nan, -0.0, 0.0]
    t = np.eye(10, dtype=dtype)[rng.integers(0, 10, 256)]
    with gpu.context():
        zd, td = gpu.asarray(z), gpu.asarray(t)
        for name, args in (
            ("relu", (zd,)),
            ("relu_grad", (zd, zd)),
            ("softmax_cross_entropy_grad", (zd[1:], td[1:], 0.01)),
        ):
            got, want = getattr(gpu.ops, name)(*args), getattr(generic, name)(*args)
            assert got.dtype == want.dtype, name
            np.testing.assert_allclose(
                to_numpy(got), to_numpy(want), rtol=TOLERANCE[dtype], err_msg=name
            )


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_cupy_fused_updates_train_as_the_generic_path(dtype, optimizer):
    X, y = _data()
    gpu = xpnet.resolve("cuda:0")
    weights = []
    for backend in (gpu, _with_generic_ops(gpu)):
        opt = xpnet.SGD(0.05, momentum=0.9) if optimizer == "sgd" else xpnet.Adam()
        model = xpnet.mlp(
            [20, 32, 5], device=backend, dtype=dtype, seed=0, optimizer=opt
        )
        model.fit(X.astype(dtype), y, epochs=3, batch_size=32)
        weights.append(model.state_dict())
    # The kernels may fuse a product and a sum (FMA): an ulp apart per step.
    # Adam turns any sign of a nearly-zero float32 gradient into a step of lr
    # (1e-3), so there two steps' worth is allowed.
    if dtype == "float64":
        tolerance = {"rtol": 1e-9, "atol": 1e-12}
    else:
        tolerance = {"rtol": 1e-4, "atol": 1e-6 if optimizer == "sgd" else 2e-3}
    for key, value in weights[1].items():
        np.testing.assert_allclose(weights[0][key], value, **tolerance)


def test_cupy_training_agrees_with_numpy():
    X, y = _data()
    runs = []
    for device in ("cuda:0", "cpu"):
        model = xpnet.mlp([20, 32, 5], device=device, dtype="float64", seed=0)
        history = model.fit(X, y, epochs=3, batch_size=32)
        runs.append((history["loss"], model.state_dict()))
    np.testing.assert_allclose(runs[0][0], runs[1][0], rtol=1e-10)
    for key, value in runs[1][1].items():
        np.testing.assert_allclose(runs[0][1][key], value, rtol=1e-9, atol=1e-12)


def test_cupy_steps_do_not_synchronise():
    import cupyx

    X, y = _data()
    model = xpnet.mlp([20, 32, 5], device="cuda:0", seed=0, optimizer=xpnet.Adam())
    step = model.step_function()
    with model.backend.context():
        xb = model.to_device(X[:64], "float32")
        yb = model.loss.targets(model.to_device(y[:64]), 5)
        step.update(xb, yb)
        with cupyx.allow_synchronize(False):
            for _ in range(10):
                step.update(xb, yb)
    assert model.weights_finite()


def _torch_cuda():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch sees no CUDA GPU")
    return torch


def test_cupy_model_takes_torch_cuda_tensors_through_dlpack():
    torch = _torch_cuda()
    model = xpnet.mlp([20, 8, 5], device="cuda:0", seed=0)
    X = torch.randn(64, 20, device="cuda:0")
    assert model.backend.from_dlpack(X) is not None  # no host round trip
    np.testing.assert_allclose(
        to_numpy(model.to_device(X, "float32")), X.cpu().numpy(), rtol=0
    )
    assert model.predict(X).shape == (64,)


def test_cupy_peer_torch_cuda_graph_step_trains_as_eager():
    _torch_cuda()
    from xpnet.native_torch import CudaGraphStep
    from xpnet.training import fit

    X, y = _data(n=1037)
    backend = xpnet.resolve("cuda:0", "torch")
    weights = []
    for graphed in (False, True):
        model = xpnet.mlp(
            [20, 32, 5], device=backend, seed=0, optimizer=xpnet.SGD(0.05, momentum=0.9)
        )
        step = CudaGraphStep(model) if graphed else None
        fit(model, X.astype("float32"), y, epochs=3, batch_size=64, step=step)
        weights.append(model.state_dict())
    for key, value in weights[0].items():
        np.testing.assert_allclose(weights[1][key], value, rtol=1e-6, atol=1e-7)
