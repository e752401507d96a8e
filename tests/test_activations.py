import math

import numpy as np
import pytest
from gradcheck import assert_gradient, numeric_gradient

import xpnet
from xpnet.activations import ACTIVATIONS, get_activation

_FIRST_NAME: dict[type, str] = {}
for _name, _cls in ACTIVATIONS.items():
    _FIRST_NAME.setdefault(_cls, _name)
NAMES = sorted(_FIRST_NAME.values())  # one canonical name per class


def _points(seed: int = 0) -> np.ndarray:
    # Away from 0 so no finite difference straddles the ReLU-family kinks.
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 1.5, size=(4, 5))
    return np.where(np.abs(x) < 0.05, 0.3, x)


@pytest.mark.parametrize("name", NAMES)
def test_activation_gradient_matches_finite_differences(backend, name):
    layer = get_activation(name)
    layer.build(backend, "float64")
    x = _points()
    weights = np.random.default_rng(1).normal(size=x.shape)

    def objective(x_host):
        out = xpnet.to_numpy(layer.forward(backend.asarray(x_host)))
        return float(np.sum(out * weights))

    layer.forward(backend.asarray(x))
    analytic = xpnet.to_numpy(layer.backward(backend.asarray(weights)))
    assert_gradient(f"{name}[{backend.name}]", analytic, numeric_gradient(objective, x))


EXPECTED = {
    "relu": lambda x: np.maximum(x, 0),
    "leaky_relu": lambda x: np.where(x > 0, x, 0.01 * x),
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "tanh": np.tanh,
    "elu": lambda x: np.where(x > 0, x, np.expm1(x)),
    "softplus": lambda x: np.log1p(np.exp(x)),
    "silu": lambda x: x / (1 + np.exp(-x)),
    "identity": lambda x: x,
    "softmax": lambda x: np.exp(x) / np.exp(x).sum(axis=1, keepdims=True),
    "gelu": lambda x: (
        0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    ),
}


@pytest.mark.parametrize("name", NAMES)
def test_activation_values(numpy_backend, name):
    layer = get_activation(name)
    layer.build(numpy_backend, "float64")
    x = _points(3)
    np.testing.assert_allclose(
        layer.forward(x), EXPECTED[name](x), rtol=1e-12, atol=1e-15
    )


def test_gelu_tanh_form_is_close_to_exact_erf_form(numpy_backend):
    layer = get_activation("gelu")
    layer.build(numpy_backend, "float64")
    x = np.linspace(-6, 6, 241).reshape(1, -1)
    exact = np.array([[v * 0.5 * (1 + math.erf(v / math.sqrt(2))) for v in x[0]]])
    assert np.max(np.abs(layer.forward(x) - exact)) < 1e-3


@pytest.mark.parametrize(
    "name", ["sigmoid", "softplus", "silu", "elu", "softmax", "gelu", "tanh"]
)
def test_activation_is_finite_for_huge_inputs(backend, name):
    layer = get_activation(name)
    layer.build(backend, "float32")
    x = np.array([[-1e4, -100.0, 0.0, 100.0, 1e4]], dtype=np.float32)
    with np.errstate(over="raise", invalid="raise"):
        out = xpnet.to_numpy(layer.forward(backend.asarray(x)))
        grad = xpnet.to_numpy(layer.backward(backend.asarray(np.ones_like(x))))
    assert np.all(np.isfinite(out)) and np.all(np.isfinite(grad))


def test_sigmoid_saturates_to_exact_limits(numpy_backend):
    layer = get_activation("sigmoid")
    layer.build(numpy_backend, "float64")
    out = layer.forward(np.array([[-800.0, 800.0]]))
    assert out[0, 0] == 0.0 and out[0, 1] == 1.0


def test_unknown_activation_lists_choices():
    with pytest.raises(xpnet.XpnetError, match=r"unknown activation 'rellu'.*relu"):
        get_activation("rellu")
    assert "\n" not in str(pytest.raises(xpnet.XpnetError, get_activation, "x").value)


def test_names_accept_dashes():
    assert isinstance(get_activation("leaky-relu"), xpnet.LeakyReLU)
    assert isinstance(get_activation("Swish"), xpnet.SiLU)
