"""Backend fast paths (xpnet.native_numpy.NumpyOps) give the numbers of the
generic Array API reference (xpnet.fastpaths.Ops)."""

from __future__ import annotations

import array_api_compat.numpy as xp
import numpy as np
import pytest

from xpnet.backend import ops_for
from xpnet.fastpaths import Ops
from xpnet.native_numpy import NumpyOps

REF = Ops(xp, "cpu", on_cpu=True)
NATIVE = NumpyOps(xp, "cpu", on_cpu=True)
DTYPES = [np.float32, np.float64]


def _data(dtype, shape=(64, 33), seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=shape).astype(dtype)
    return x, x > 0.2


def test_numpy_gets_the_native_ops_and_others_the_generic():
    import array_api_strict

    assert isinstance(ops_for(xp, "cpu"), NumpyOps)
    strict = ops_for(array_api_strict, array_api_strict.Device("CPU_DEVICE"))
    assert type(strict) is Ops and strict.on_cpu


@pytest.mark.parametrize("dtype", DTYPES)
def test_keep(dtype):
    x, mask = _data(dtype)
    # Finite values only: the native 0/1 product turns a masked-off inf into
    # NaN where the reference gives 0 (a gradient that is already diverged).
    x[0, :3] = [-0.0, 1e-40, np.finfo(dtype).max]
    got, want = NATIVE.keep(x, mask), REF.keep(x, mask)
    assert got.dtype == want.dtype == dtype
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("form", ["arrays", "array-float", "float-array"])
def test_select_within_one_ulp(dtype, form):
    x, mask = _data(dtype)
    y = 0.01 * x
    a, b = {"arrays": (x, y), "array-float": (x, 0.5), "float-array": (0.5, y)}[form]
    got, want = NATIVE.select(mask, a, b), REF.select(mask, a, b)
    assert got.dtype == want.dtype == dtype
    np.testing.assert_array_max_ulp(got, want, maxulp=1)
    # exactly b where the mask is off
    np.testing.assert_array_equal(got[~mask], want[~mask])


@pytest.mark.parametrize("dtype", DTYPES)
def test_matmul_into_writes_into_out(dtype):
    a, _ = _data(dtype, (17, 9), seed=1)
    b, _ = _data(dtype, (9, 5), seed=2)
    out_native = np.zeros((17, 5), dtype)
    out_ref = np.zeros((17, 5), dtype)
    assert NATIVE.matmul_into(out_native, a, b) is out_native
    assert REF.matmul_into(out_ref, a, b) is out_ref
    np.testing.assert_allclose(out_native, out_ref, rtol=4 * np.finfo(dtype).eps)
    np.testing.assert_allclose(out_native, a @ b, rtol=4 * np.finfo(dtype).eps)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sum_rows_into_writes_into_out(dtype):
    x, _ = _data(dtype, (50, 7))
    out_native, out_ref = np.zeros(7, dtype), np.zeros(7, dtype)
    assert NATIVE.sum_rows_into(out_native, x) is out_native
    assert REF.sum_rows_into(out_ref, x) is out_ref
    np.testing.assert_array_equal(out_native, out_ref)
    np.testing.assert_allclose(out_native, x.sum(axis=0, dtype=np.float64), rtol=1e-5)


# (rows, columns): the native column loop (many rows, few columns) and both
# fallbacks to NumPy's own reduction
ROW_SHAPES = [(300, 10), (300, 1), (7, 10), (300, 40)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", ROW_SHAPES)
def test_row_max_is_exact(dtype, shape):
    x, _ = _data(dtype, shape)
    x[3, -1] = np.nan  # a NaN row stays NaN, as in the reference
    got, want = NATIVE.row_max(x), REF.row_max(x)
    assert got.shape == want.shape == (shape[0], 1) and got.dtype == dtype
    np.testing.assert_array_equal(got, want)
    assert np.isnan(got[3, 0])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", ROW_SHAPES)
def test_row_sum_within_rounding(dtype, shape):
    x, _ = _data(dtype, shape)
    got, want = NATIVE.row_sum(x), REF.row_sum(x)
    assert got.shape == want.shape == (shape[0], 1) and got.dtype == dtype
    np.testing.assert_allclose(got, want, rtol=0, atol=8 * np.finfo(dtype).eps)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", ROW_SHAPES)
@pytest.mark.parametrize("tie", [None, "zeros", "equal", "nan"])
def test_argmax_hits_counts_the_first_maximum(dtype, shape, tie):
    x, _ = _data(dtype, shape)
    labels = xp.asarray(np.random.default_rng(2).integers(0, shape[1], shape[0]))
    labels[:3] = 0
    x[0, 0] = x[1, 0] = x[2, 0] = 9.0  # some hits
    if tie == "zeros":  # a dead network: all outputs equal, argmax is 0
        x[:] = 0.0
    elif tie == "equal" and shape[1] > 1:  # the first of two maxima counts
        x[0, -1] = 9.0
        labels[1], x[1, -1] = shape[1] - 1, 9.0
    elif tie == "nan" and shape[1] > 1:
        x[5, 1] = np.nan
    got, want = NATIVE.argmax_hits(x, labels), REF.argmax_hits(x, labels)
    assert got.dtype == want.dtype == np.int64 and got.shape == ()
    assert int(got) == int(want) == int(np.sum(np.argmax(x, axis=1) == labels))


@pytest.mark.parametrize("dtype", DTYPES)
def test_take_rows_into_the_buffer(dtype):
    x, _ = _data(dtype, (50, 7))
    rows = xp.asarray(np.random.default_rng(1).permutation(50)[:20])
    assert REF.rows_buffer(20, x) is None
    buffer = NATIVE.rows_buffer(20, x)
    assert buffer.shape == (20, 7) and buffer.dtype == dtype
    got = NATIVE.take_rows(x, rows, buffer)
    assert got is buffer
    np.testing.assert_array_equal(got, REF.take_rows(x, rows))
    np.testing.assert_array_equal(NATIVE.take_rows(x, rows), x[rows])


@pytest.mark.parametrize("dtype", DTYPES)
def test_flush_denormals(dtype):
    tiny = np.finfo(dtype).smallest_normal
    values = np.array([1.0, tiny, tiny / 2, -tiny / 4, 0.0, -3.0], dtype)
    expected = np.array([1.0, tiny, 0.0, 0.0, 0.0, -3.0], dtype)
    native = {"v": values.copy()}
    ref = {"v": values.copy()}
    kept = native["v"]
    NATIVE.flush_denormals(native)
    REF.flush_denormals(ref)
    assert native["v"] is kept  # in place, the optimizer's buffer itself
    np.testing.assert_array_equal(native["v"], expected)
    np.testing.assert_array_equal(ref["v"], expected)


def test_flush_denormals_is_a_no_op_off_the_cpu():
    gpu_like = Ops(xp, "cpu", on_cpu=False)
    buf = np.array([np.finfo(np.float32).smallest_normal / 2], np.float32)
    state = {"v": buf}
    gpu_like.flush_denormals(state)
    assert state["v"] is buf and state["v"][0] != 0


@pytest.mark.parametrize(
    "activation,loss", [("relu", "cross-entropy"), ("elu", "mse"), ("relu", "bce")]
)
def test_a_torch_step_avoids_the_compat_calls_that_sync(activation, loss, monkeypatch):
    """array-api-compat's torch maximum/minimum copy a Python scalar to the
    device (a host sync on CUDA) and its generic clip indexes with boolean masks
    (a sync on CuPy): none may run in a training step."""
    torch_xp = pytest.importorskip("array_api_compat.torch")
    import xpnet
    from xpnet.losses import BinaryCrossEntropy

    backend = xpnet.resolve("cpu", "torch")
    chosen = BinaryCrossEntropy(from_logits=False) if loss == "bce" else loss
    layers = [xpnet.Dense(6, 5), xpnet.get_activation(activation), xpnet.Dense(5, 3)]
    if loss == "bce":
        layers.append(xpnet.Sigmoid())
    model = xpnet.Sequential(layers, loss=chosen, device=backend, seed=0)
    x = model.to_device(np.random.default_rng(0).random((8, 6)), "float32")
    y = model.to_device(np.arange(8) % 3)

    def forbidden(name):
        def call(*args, **kwargs):
            raise AssertionError(f"array_api_compat.torch.{name} ran in a step")

        return call

    for name in ("maximum", "minimum", "clip"):
        monkeypatch.setattr(torch_xp, name, forbidden(name))
    model.train_step(x, y)
