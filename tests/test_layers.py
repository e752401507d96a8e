import numpy as np
import pytest
from gradcheck import assert_gradient, numeric_gradient

import xpnet
from xpnet.initializers import INITIALIZERS, initial_weights


def _dense(backend, rng_seed=0, in_f=5, out_f=3):
    layer = xpnet.Dense(in_f, out_f, init="glorot_normal")
    layer.build(backend, "float64", np.random.default_rng(rng_seed))
    layer.params["b"] = backend.asarray(np.random.default_rng(9).normal(size=out_f))
    return layer


def test_dense_forward_is_xw_plus_b(backend):
    layer = _dense(backend)
    x = np.random.default_rng(1).normal(size=(4, 5))
    W = xpnet.to_numpy(layer.params["W"])
    b = xpnet.to_numpy(layer.params["b"])
    out = xpnet.to_numpy(layer.forward(backend.asarray(x)))
    np.testing.assert_allclose(out, x @ W + b, rtol=1e-12)


def test_dense_gradients_match_finite_differences(backend):
    layer = _dense(backend)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(4, 5))
    weights = rng.normal(size=(4, 3))
    params = {k: xpnet.to_numpy(v).copy() for k, v in layer.params.items()}

    def objective_of(name):
        """Sum(forward(x) * weights) as a function of x, W or b alone."""

        def f(value):
            inputs = value if name == "x" else x
            saved = dict(layer.params)
            if name != "x":
                layer.params[name] = backend.asarray(value)
            out = layer.forward(backend.asarray(inputs))
            layer.params.update(saved)
            return float(np.sum(xpnet.to_numpy(out) * weights))

        return f

    layer.forward(backend.asarray(x))
    dx = xpnet.to_numpy(layer.backward(backend.asarray(weights)))
    grads = {k: xpnet.to_numpy(v) for k, v in layer.grads.items()}
    assert_gradient(
        f"Dense.x[{backend.name}]", dx, numeric_gradient(objective_of("x"), x)
    )
    for name in ("W", "b"):
        assert_gradient(
            f"Dense.{name}[{backend.name}]",
            grads[name],
            numeric_gradient(objective_of(name), params[name]),
        )


def test_first_layer_skips_input_gradient(numpy_backend):
    layer = _dense(numpy_backend)
    layer.needs_input_grad = False
    layer.forward(np.ones((2, 5)))
    assert layer.backward(np.ones((2, 3))) is None
    assert layer.grads["W"].shape == (5, 3)


@pytest.mark.parametrize("name", sorted(INITIALIZERS))
def test_initial_weights_are_bit_identical_on_every_backend(backend, name):
    reference = xpnet.resolve("cpu", "numpy")
    for dtype in ("float32", "float64"):
        a = xpnet.Dense(64, 32, init=name)
        a.build(reference, dtype, np.random.default_rng(7))
        b = xpnet.Dense(64, 32, init=name)
        b.build(backend, dtype, np.random.default_rng(7))
        wa, wb = xpnet.to_numpy(a.params["W"]), xpnet.to_numpy(b.params["W"])
        assert wa.dtype == wb.dtype == np.dtype(dtype)
        assert np.array_equal(wa, wb)
        assert not np.any(xpnet.to_numpy(b.params["b"]))


@pytest.mark.parametrize(
    "name,variance",
    [
        ("he_normal", 2 / 400),
        ("he_uniform", 2 / 400),
        ("glorot_normal", 2 / 600),
        ("glorot_uniform", 2 / 600),
    ],
)
def test_initialiser_variance(name, variance):
    w = initial_weights(name, np.random.default_rng(0), 400, 200)
    assert w.shape == (400, 200)
    assert abs(w.mean()) < 0.01 * np.sqrt(variance) * 10
    assert w.var() == pytest.approx(variance, rel=0.03)


def test_sequential_picks_he_for_relu_and_glorot_for_tanh():
    relu = xpnet.mlp([400, 200, 10], "relu", device="cpu", seed=0)
    tanh = xpnet.mlp([400, 200, 10], "tanh", device="cpu", seed=0)
    assert xpnet.to_numpy(relu.layers[0].params["W"]).var() == pytest.approx(
        2 / 400, rel=0.05
    )
    assert xpnet.to_numpy(tanh.layers[0].params["W"]).var() == pytest.approx(
        2 / 600, rel=0.05
    )


@pytest.mark.parametrize(
    "args,match",
    [
        ((0, 3), "in_features must be a positive integer"),
        ((3, -1), "out_features must be a positive integer"),
        ((2.5, 3), "in_features must be a positive integer"),
    ],
)
def test_dense_rejects_bad_sizes(args, match):
    with pytest.raises(xpnet.XpnetError, match=match):
        xpnet.Dense(*args)


def test_dense_rejects_unknown_initialiser():
    with pytest.raises(
        xpnet.XpnetError, match="unknown initialiser 'lecun'.*he_normal"
    ):
        xpnet.Dense(3, 3, init="lecun")
