"""Review item 10: a library model pickles and deep-copies, on every backend,
and the copy gives the same numbers as the original, then and after training
on (the namespace is re-resolved from the backend's name and device)."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest

import xpnet
from xpnet.errors import XpnetError


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    X = rng.random((96, 12)).astype(np.float32)
    return X, (X[:, 0] + X[:, 1] > 1.0).astype(np.int64)


def _trained(backend: xpnet.Backend, optimizer: str) -> xpnet.Sequential:
    X, y = _data()
    model = xpnet.mlp([12, 8, 2], device=backend, optimizer=optimizer, seed=5)
    model.fit(X, y, epochs=2, batch_size=16)
    return model


def _pickled(model: xpnet.Sequential) -> xpnet.Sequential:
    return pickle.loads(pickle.dumps(model))


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("how", [_pickled, copy.deepcopy, copy.copy])
def test_item10_sequential_pickles_and_copies_with_the_same_numbers(
    backend, optimizer, how
):
    X, y = _data()
    model = _trained(backend, optimizer)
    clone = how(model)
    assert clone is not model and clone.backend == model.backend
    assert clone.backend.device == model.backend.device
    assert clone.task == model.task and clone.epochs_trained == 2
    np.testing.assert_array_equal(clone.predict_proba(X), model.predict_proba(X))
    # Training on: the same optimizer state and shuffling RNG give the same
    # losses and weights, and the two models share no buffers.
    ours = model.fit(X, y, epochs=2, batch_size=16).history["loss"]
    theirs = clone.fit(X, y, epochs=2, batch_size=16).history["loss"]
    assert ours == theirs
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(clone.state_dict()[key], value)


def test_item10_backend_pickles_by_name_and_device(backend):
    again = pickle.loads(pickle.dumps(backend))
    assert again == backend and again.device == backend.device


def test_item10_a_model_with_an_unnamed_optimizer_is_refused_in_one_line():
    class Mine(xpnet.SGD):
        pass

    model = xpnet.mlp([4, 3, 2], device="cpu", optimizer=Mine(lr=0.1))
    with pytest.raises(XpnetError, match="cannot pickle or copy this model"):
        pickle.dumps(model)


def test_item10_a_model_pickled_on_a_gpu_loads_on_the_cpu_with_a_warning(monkeypatch):
    """A pickle made on cuda:1 (CuPy's stand-in) opened where CuPy is gone:
    the model comes back on the CPU with NumPy, saying so, same numbers."""
    import fake_cupy

    from xpnet import backend as backend_module

    X, y = _data()
    backend_module.probe_cupy.cache_clear()
    fake_cupy.install(monkeypatch)
    model = _trained(xpnet.resolve("cuda:1"), "adam")
    expected = model.predict_proba(X)
    data = pickle.dumps(model)
    monkeypatch.undo()
    backend_module.probe_cupy.cache_clear()
    with pytest.warns(UserWarning, match="not usable here .* CPU with numpy"):
        again = pickle.loads(data)
    assert again.backend.name == "numpy" and again.epochs_trained == 2
    np.testing.assert_allclose(again.predict_proba(X), expected, rtol=1e-6)
