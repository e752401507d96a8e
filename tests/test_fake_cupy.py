"""xpnet's CuPy lines, run against a NumPy-backed CuPy with two fake GPUs.

The stand-in (``tests/fake_cupy.py``) follows CuPy's documented behaviour:
arrays live on the device that was current when they were made, kernels run
on the current device and refuse arrays on another one (CuPy's ValueError
without peer access), ``.get()`` is the way out, ``from_dlpack`` refuses CPU
producers. So these tests prove that xpnet's device resolution and probe,
its device context, synchronisation, GPU facts, ``info``, DLPack intake and
the bench's GPU paths execute and keep every array and kernel of ``cuda:N``
on GPU N.

What they cannot prove: that real CUDA kernels compile and give these numbers
(NVRTC, cuBLAS, float32 reductions in another order); streams and asynchrony
(every "kernel" here finishes before it returns, so a missing synchronize
goes unseen, except where the tests count the calls); device memory (size,
pools, out-of-memory); speed; DLPack with real device memory (torch CUDA
tensors in, CuPy arrays out to torch: the stand-in's arrays cannot be
exported); peer access between GPUs; NCCL or multi-process use. Those need a
GPU: ``bench/gpu_check.sh``.
"""

from __future__ import annotations

import contextlib
import json

import fake_cupy
import numpy as np
import pytest

import xpnet
from xpnet import backend as backend_module
from xpnet import cli
from xpnet.backend import Backend, to_numpy
from xpnet.checkpoint import Checkpoint

DEVICES = ["cuda:0", "cuda:1"]


@pytest.fixture
def cupy(monkeypatch):
    """The stand-in as ``cupy`` (device 0 current, records empty); restored,
    with a fresh probe cache, afterwards."""
    backend_module.probe_cupy.cache_clear()
    module = fake_cupy.install(monkeypatch)
    yield module
    backend_module.probe_cupy.cache_clear()


def data(n: int = 48):
    rng = np.random.default_rng(0)
    return rng.random((n, 5)).astype(np.float32), rng.integers(0, 3, n)


def devices_used(cupy) -> set[int]:
    return {device for device, _ in cupy.launches} | set(cupy.allocations)


@pytest.mark.parametrize("device", DEVICES)
def test_cuda_n_resolves_to_a_cupy_backend_on_gpu_n(cupy, device):
    chosen = xpnet.resolve(device)
    index = int(device[-1])
    assert (chosen.name, chosen.device_name) == ("cupy", device)
    assert chosen.device == cupy.cuda.Device(index) and chosen.is_gpu
    assert chosen.owns(chosen.asarray([1.0, 2.0]))
    with pytest.raises(xpnet.DeviceError, match=r"this machine has 2 GPU\(s\)"):
        xpnet.resolve("cuda:2")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_training_on_cuda_n_keeps_every_array_and_kernel_on_gpu_n(
    cupy, device, optimizer, tmp_path
):
    X, y = data()
    gpu = xpnet.resolve(device)
    cupy.reset()
    index = int(device[-1])

    def build(on):
        opt = xpnet.SGD(lr=0.1, momentum=0.9) if optimizer == "sgd" else xpnet.Adam()
        return xpnet.mlp([5, 8, 3], device=on, seed=0, optimizer=opt)

    model = build(gpu)
    history = model.fit(X, y, epochs=2, batch_size=16, validation_data=(X, y))
    scores = model.evaluate(X, y)
    labels, proba = model.predict(X), model.predict_proba(X)
    path = Checkpoint(model).to_file(tmp_path / "model.npz")
    loaded = Checkpoint.from_file(path, device=device).model
    loaded.fit(X, y, epochs=1, batch_size=16)
    assert devices_used(cupy) == {index}
    assert cupy._current[0] == 0  # every context was left
    # The stand-in computes with NumPy: the same run on the CPU agrees.
    cpu = build(xpnet.resolve("cpu"))
    cpu_history = cpu.fit(X, y, epochs=2, batch_size=16, validation_data=(X, y))
    np.testing.assert_allclose(history["loss"], cpu_history["loss"], rtol=1e-5)
    assert scores["accuracy"] == cpu.evaluate(X, y)["accuracy"]
    np.testing.assert_array_equal(labels, cpu.predict(X))
    np.testing.assert_allclose(proba, cpu.predict_proba(X), rtol=1e-5, atol=1e-7)
    cpu.fit(X, y, epochs=1, batch_size=16)
    for key, value in cpu.state_dict().items():
        np.testing.assert_allclose(loaded.state_dict()[key], value, atol=1e-6)


def test_without_the_device_context_cuda_1_fails_as_cupy_would(cupy, monkeypatch):
    """The check above can fail: with no device context, biases and kernels
    land on GPU 0 while the data is on GPU 1."""
    monkeypatch.setattr(Backend, "context", lambda self: contextlib.nullcontext())
    X, y = data()
    with pytest.raises(ValueError, match="Peer access is unavailable between"):
        xpnet.mlp([5, 8, 3], device="cuda:1", seed=0).fit(X, y, batch_size=16)


def test_every_public_method_that_launches_work_makes_its_gpu_current(cupy):
    """Called on their own (not from fit), with GPU 0 current."""
    X, y = data()
    model = xpnet.mlp([5, 8, 3], device="cuda:1", seed=0)
    inputs = model.prepare_inputs(X)
    targets = model.prepare_targets(y, X.shape[0])[0]
    wide = model.to_device(X, "float64")
    assert model.to_device(wide, "float32").dtype == np.float32  # a cast kernel
    assert model.weights_finite()
    loss, _ = model.train_step(inputs[:16], targets[:16])
    assert model.read_floats(loss, loss) == [float(loss)] * 2
    assert devices_used(cupy) - {0} == {1}  # GPU 0: resolve's probe only


def test_synchronize_waits_on_the_backends_own_device(cupy):
    gpu = xpnet.resolve("cuda:1")
    cupy.synced.clear()
    gpu.synchronize()
    assert cupy.synced == [1] and cupy._current[0] == 0


def test_to_numpy_copies_device_arrays_out_with_get(cupy):
    gpu = xpnet.resolve("cuda:1")
    x = gpu.asarray(np.arange(6.0).reshape(2, 3))
    host = to_numpy(x)
    assert type(host) is np.ndarray
    np.testing.assert_array_equal(host, np.arange(6.0).reshape(2, 3))
    host[0, 0] = 99.0  # a copy: the device array is untouched
    assert float(x[0, 0]) == 0.0
    with pytest.raises(TypeError, match="use `.get\\(\\)`"):
        np.asarray(x)  # as CuPy: no implicit conversion


def test_gpu_facts_name_and_info_report_both_devices(cupy, capsys):
    facts = backend_module.gpu_facts()
    assert [f["device"] for f in facts] == DEVICES
    assert [f["name"] for f in facts] == ["Fake GPU 0", "Fake GPU 1"]
    # memGetInfo answers for the current device: each GPU's own was asked
    assert [f["memory_free_gib"] for f in facts] == [40.0, 50.0]
    assert facts[1]["cuda_runtime"] == "12.4" and facts[1]["cuda_driver"] == "12.8"
    assert facts[1]["compute_capability"] == "9.0"
    assert backend_module.gpu_facts(["cuda:5"])[0]["error"]
    assert backend_module.gpu_name(xpnet.resolve("cuda:1")) == "Fake GPU 1"
    assert "(Fake GPU 1)" in xpnet.resolve("cuda:1").describe()
    assert backend_module.available_backends()["cupy"] == cupy.__version__
    assert cli.main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert [g["name"] for g in info["gpus"]] == ["Fake GPU 0", "Fake GPU 1"]
    assert info["auto_device"]["device"] == "cuda:0"
    assert info["backends"]["cupy"] == cupy.__version__


def test_auto_picks_cuda_0_after_running_kernels_there(cupy):
    chosen = xpnet.resolve("auto")
    assert (chosen.name, chosen.device_name, chosen.notice) == ("cupy", "cuda:0", "")
    probe = [name for device, name in cupy.launches if device == 0]
    assert "__mul__" in probe and "__matmul__" in probe  # elementwise and cuBLAS
    launched = len(cupy.launches)
    xpnet.resolve("auto")
    assert len(cupy.launches) == launched  # probed once per process and device


def test_a_probe_that_fails_on_gpu_1_refuses_cuda_1(cupy, monkeypatch):
    real = cupy.__getattr__("arange")

    def arange(*args, **kwargs):
        if cupy._current[0] == 1:
            raise RuntimeError("CuPy failed to load libnvrtc.so.12")
        return real(*args, **kwargs)

    monkeypatch.setattr(cupy, "arange", arange, raising=False)
    assert xpnet.resolve("cuda:0").device_name == "cuda:0"
    with pytest.raises(xpnet.DeviceError, match="cuda:1.*libnvrtc"):
        xpnet.resolve("cuda:1")


def test_arrays_from_elsewhere_arrive_on_the_models_gpu(cupy):
    """CuPy refuses CPU DLPack producers, so a torch CPU tensor comes through
    the host; a CuPy array on another GPU is imported on *its* GPU by
    from_dlpack, so it is copied too."""
    torch = pytest.importorskip("torch")
    model = xpnet.mlp([5, 8, 3], device="cuda:1", seed=0)
    tensor = torch.arange(10, dtype=torch.float32).reshape(2, 5)
    assert model.backend.from_dlpack(tensor) is None
    with pytest.raises(TypeError, match="CPU arrays cannot be directly imported"):
        cupy.from_dlpack(tensor)
    moved = model.to_device(tensor, "float32")
    assert moved.device == cupy.cuda.Device(1)
    np.testing.assert_array_equal(to_numpy(moved), tensor.numpy())
    with cupy.cuda.Device(0):
        other = cupy.arange(10.0).reshape(2, 5)
    moved = model.to_device(other, "float32")
    assert moved.device == cupy.cuda.Device(1) and model.backend.owns(moved)
    np.testing.assert_array_equal(to_numpy(moved), to_numpy(other))
    assert model.predict(tensor).shape == (2,)


def test_the_bench_lists_and_times_both_gpus(cupy):
    from xpnet.bench import machine, plan, runners

    assert plan.parse_devices("all") == ["cpu", *DEVICES]
    assert plan.parse_devices("cuda:1,cpu") == ["cuda:1", "cpu"]
    gpu = xpnet.resolve("cuda:1")
    cupy.reset()
    gemm = machine.measure_gemm("xpnet", gpu, n=16, repeats=3)
    assert gemm["what"] == "cupy matmul" and len(gemm["times"]) == 3
    assert cupy.synced == [1] * 8  # before and after each of 4 products
    assert cupy.launches.count((1, "__matmul__")) == 4
    env = machine.environment(["cpu", "cuda:1"])
    assert [g["name"] for g in env["gpus"]] == ["Fake GPU 1"]
    X, y = data(64)
    X = np.tile(X, (1, 157))[:, :784]  # the bench's models take MNIST rows
    runner = runners.XpnetRunner((784, 16, 10), X, y % 10, 32, gpu)
    cupy.reset()
    assert np.isfinite(runner.run_epoch())
    assert runner.input_check_seconds(repeats=1) >= 0.0
    assert runner.optimizer_denormal_fraction() == 0.0
    assert devices_used(cupy) == {1} and 1 in cupy.synced


def test_the_stand_in_refuses_what_cupy_refuses(cupy):
    """The stand-in itself: arrays keep their device, kernels check it."""
    with cupy.cuda.Device(1):
        a = cupy.ones((2, 3))
        assert cupy.cuda.runtime.getDevice() == 1
    assert a.device.id == 1 and a.T.device.id == 1  # a view stays on its GPU
    with pytest.raises(ValueError, match=r"resides \(1\) .* current device \(0\)"):
        a + 1.0
    with cupy.cuda.Device(1), pytest.raises(TypeError, match="Unsupported type"):
        a + np.ones((2, 3))  # host arrays are not kernel arguments


def test_xpnet_train_and_resume_on_cuda_1(cupy, tmp_path):
    path = str(tmp_path / "run.npz")
    small = ["--dataset", "mnist-sample", "--hidden", "16", "--quiet"]
    assert cli.main(["train", *small, "--device", "cuda:1", "--save", path]) == 0
    assert devices_used(cupy) - {0} == {1}  # GPU 0: the probe only
    assert cli.main(["train", "--resume", path, "--epochs", "2"]) == 0
    saved = json.loads((tmp_path / "run.npz.json").read_text())["saved_from"]
    assert saved == {"backend": "cupy", "device": "cuda:1"}


def test_xpnet_bench_runs_on_cuda_1(cupy, monkeypatch, tmp_path, capsys):
    from xpnet.bench import plan, timing

    monkeypatch.setattr(timing, "wait_for_quiet", lambda *a, **k: 0.0)
    monkeypatch.setattr(plan, "SETTLE_S", 0.0)
    argv = ["--device", "cuda:1", "--models", "seed", "--rows", "300"]
    argv += ["--batch-sizes", "128", "--gemm-size", "32", "--peers", "none"]
    argv += ["--out", str(tmp_path), "--in-process", "--json", "--no-plot"]
    assert cli.main(["bench", *argv]) == 0
    digest = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [row["device"] for row in digest["rows"]] == ["cuda:1"]
    assert devices_used(cupy) - {0} == {1} and 1 in cupy.synced


def test_issue17_a_cupy_step_does_no_host_sync(cupy):
    """Ten training steps inside cupyx.allow_synchronize(False), which the
    stand-in enforces as CuPy does (bench/gpu_check.py runs the same on a GPU)."""
    import cupyx

    X, y = data(64)
    model = xpnet.mlp([5, 8, 3], device="cuda:1", seed=0, optimizer=xpnet.Adam())
    step = model.step_function()
    with model.backend.context():  # as fit runs its steps
        xb = model.to_device(X, "float32")
        yb = model.loss.targets(model.to_device(y), 3)
        step.update(xb, yb)
        with cupyx.allow_synchronize(False):
            for _ in range(10):
                step.update(xb, yb)
            with pytest.raises(cupyx.DeviceSynchronized):
                model.read_floats(xb[0, 0])  # a read-back is refused there
    assert model.weights_finite()


def test_issue17_the_stand_in_runs_elementwise_kernels_as_written(cupy):
    kernel = cupy.ElementwiseKernel(
        "T x, T s", "T y", "y = x > (T)0 ? x * s : (T)0", "scaled_relu"
    )
    x = cupy.asarray(np.array([[-1.0, 2.0], [0.5, np.nan]], np.float32))
    cupy.reset()
    out = kernel(x, 3.0)
    assert cupy.launches == [(0, "scaled_relu")] and out.dtype == np.float32
    np.testing.assert_array_equal(out.get(), [[0.0, 6.0], [1.5, 0.0]])
    both = cupy.ElementwiseKernel("T g", "T v, T w", "v = v - g; w = w + v", "two")
    v, w = cupy.zeros((2,)), cupy.ones((2,))
    assert both(cupy.asarray([1.0, 2.0]), v, w) == (v, w)
    np.testing.assert_array_equal(w.get(), [0.0, -1.0])
    with pytest.raises(NotImplementedError):
        cupy.ElementwiseKernel("T x", "T y", "y = x && x", "logic")


def test_issue17_cupy_ops_equal_the_generic_reference(cupy):
    """xpnet.native_cupy's kernels against xpnet.fastpaths.Ops, on the
    stand-in (exact: it evaluates both with NumPy); tests/test_gpu_cupy.py
    does the same on a GPU."""
    from xpnet.fastpaths import Ops
    from xpnet.native_cupy import CupyOps

    gpu = xpnet.resolve("cuda:1")
    assert type(gpu.ops) is CupyOps and not gpu.ops.fallback
    generic = Ops(gpu.xp, gpu.device, on_cpu=False)
    rng = np.random.default_rng(0)
    for dtype in ("float32", "float64"):
        z = rng.normal(size=(32, 10)).astype(dtype)
        z[0, :2] = [np.nan, -0.0]
        t = np.eye(10, dtype=dtype)[rng.integers(0, 10, 32)]
        with gpu.context():
            zd, td = gpu.asarray(z), gpu.asarray(t)
            for name, args in (
                ("relu", (zd,)),
                ("relu_grad", (zd, zd)),
                ("softmax_cross_entropy_grad", (zd[1:], td[1:], 0.01)),
            ):
                got = getattr(gpu.ops, name)(*args)
                want = getattr(generic, name)(*args)
                assert got.dtype == want.dtype
                np.testing.assert_array_equal(to_numpy(got), to_numpy(want), name)


def test_issue17_kernels_that_fail_their_check_fall_back_to_generic(
    cupy, monkeypatch, caplog
):
    from xpnet import native_cupy

    def broken(*args):
        raise RuntimeError("nvrtc: error: failed to compile")

    monkeypatch.setattr(native_cupy, "RELU", broken)
    monkeypatch.setattr(native_cupy, "_checked", {})
    with caplog.at_level("WARNING", logger="xpnet"):
        model = xpnet.mlp([5, 8, 3], device="cuda:1", seed=0)
    assert "cuda:1: xpnet's CuPy kernels failed their check" in caplog.text
    assert "failed to compile" in model.backend.ops.fallback
    assert "generic path" in repr(model.backend.ops)
    X, y = data()
    history = model.fit(X, y, epochs=2, batch_size=16)
    cpu = xpnet.mlp([5, 8, 3], device="cpu", seed=0).fit(X, y, epochs=2, batch_size=16)
    np.testing.assert_allclose(history["loss"], cpu["loss"], rtol=1e-5)
