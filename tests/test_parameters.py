"""xpnet.parameters: the flat parameter and gradient buffers behind the layers'
``params``/``grads`` dicts."""

from __future__ import annotations

import numpy as np
import pytest

import xpnet
from xpnet import Dense
from xpnet.errors import XpnetError
from xpnet.parameters import Parameters


def _model(backend, optimizer=None):
    return xpnet.mlp(
        [4, 5, 3],
        device=backend,
        dtype="float64",
        seed=1,
        optimizer=optimizer or xpnet.SGD(0.1, momentum=0.9),
    )


def _batch(model, n=6, seed=0):
    rng = np.random.default_rng(seed)
    return model.to_device(rng.normal(size=(n, 4)), "float64"), model.to_device(
        rng.integers(0, 3, size=n)
    )


def _assert_views_of(params: Parameters, flat) -> None:
    """Every layer's parameter shows what ``flat`` holds, and a write into
    ``flat`` shows through it (so it is a view, not a copy)."""
    xp = params.xp
    for slot in params.slots:
        expected = xpnet.to_numpy(flat[slot.start : slot.stop]).reshape(slot.shape)
        np.testing.assert_array_equal(
            xpnet.to_numpy(slot.layer.params[slot.name]), expected
        )
    flat[...] = xp.full(flat.shape, 7.0, dtype=flat.dtype, device=params.device)
    for slot in params.slots:
        assert np.all(xpnet.to_numpy(slot.layer.params[slot.name]) == 7.0), slot.name


def test_layout_puts_decayed_weights_first(numpy_backend):
    model = _model(numpy_backend)
    params = model.parameters
    starts = {(s.index, s.name): (s.start, s.stop) for s in params.slots}
    # model order: 0.W (4x5), 0.b (5), 2.W (5x3), 2.b (3); layout W, W, b, b
    assert [s.name for s in params.slots] == ["W", "b", "W", "b"]
    assert starts[(0, "W")] == (0, 20) and starts[(2, "W")] == (20, 35)
    assert starts[(1, "b")] == (35, 40) and starts[(3, "b")] == (40, 43)
    assert params.n_decayed == 35 and params.size == 43


def test_views_stay_views_after_updates(backend):
    model = _model(backend)
    xb, yb = _batch(model)
    for _ in range(3):
        model.train_step(xb, yb)
    params = model.parameters
    assert params.writeable
    _assert_views_of(params, params.flat)
    for slot in params.slots:  # gradients: views of the flat gradient buffer
        grad = slot.layer.grads[slot.name]
        params.grads[slot.start : slot.stop] = 3.0
        assert np.all(xpnet.to_numpy(grad) == 3.0)


def test_out_of_place_updates_rebind_the_views(backend):
    model = _model(backend, xpnet.SGD(0.1, momentum=0.9, inplace=False))
    xb, yb = _batch(model)
    before = model.parameters.flat
    start = xpnet.to_numpy(before, copy=True)
    model.train_step(xb, yb)
    params = model.parameters
    assert params.flat is not before  # a new buffer ...
    np.testing.assert_array_equal(xpnet.to_numpy(before), start)  # ... untouched old
    assert not np.array_equal(xpnet.to_numpy(params.flat), start)
    _assert_views_of(params, params.flat)  # ... and the layers see the new one


def test_load_copies_values_and_checks_shapes(numpy_backend):
    model = _model(numpy_backend)
    params = model.parameters
    values = [np.full(s.shape, float(i)) for i, s in enumerate(params.slots)]
    params.load(values)
    for i, slot in enumerate(params.slots):
        assert np.all(slot.layer.params[slot.name] == float(i))
    values[0][...] = 99.0  # the buffers do not share memory with the input
    assert not np.any(params.flat == 99.0)
    bad = [np.zeros((5, 4))] + values[1:]
    with pytest.raises(XpnetError, match=r"parameter 0 has shape \(5, 4\), the model"):
        params.load(bad)


def test_gather_grads_concatenates_new_gradient_arrays_in_layout_order(
    numpy_backend,
):
    layers = [Dense(2, 3), Dense(3, 1)]
    for layer in layers:
        layer.build(numpy_backend, "float64", np.random.default_rng(0))
    params = Parameters(layers, numpy_backend.xp, numpy_backend.device)
    assert params.gather_grads() is params.grads  # writeable: layers write in
    # A read-only namespace's layers hand back new arrays instead.
    params.writeable = False
    grads = {
        (0, "W"): np.full((2, 3), 1.0),
        (0, "b"): np.full(3, 2.0),
        (1, "W"): np.full((3, 1), 3.0),
        (1, "b"): np.full(1, 4.0),
    }
    for (i, name), value in grads.items():
        layers[i].grads[name] = value
    flat = params.gather_grads()
    expected = [1.0] * 6 + [3.0] * 3 + [2.0] * 3 + [4.0]  # W, W, b, b
    np.testing.assert_array_equal(flat, expected)
    assert params.grads is flat


def test_no_parameters_is_a_clear_error(numpy_backend):
    relu = xpnet.get_activation("relu")
    relu.build(numpy_backend, "float64")
    with pytest.raises(XpnetError, match="no parameters to optimise"):
        Parameters([relu], numpy_backend.xp, numpy_backend.device)


def test_set_grads_copies_into_the_buffer_the_layers_write(numpy_backend):
    model = _model(numpy_backend)
    params = model.parameters
    buffer = params.grads
    params.set_grads(np.arange(params.size, dtype=np.float64))
    assert params.grads is buffer  # the layers' views still point into it
    first = params.slots[0]
    np.testing.assert_array_equal(
        first.layer.grads[first.name].reshape(-1), np.arange(first.stop)
    )
    with pytest.raises(XpnetError, match=r"reduced gradients have shape \(3,\)"):
        params.set_grads(np.zeros(3))
