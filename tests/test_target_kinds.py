"""Issue 16 item 15: every target kind x loss through fit, evaluate and
predict on array-api-strict (its default device and another one), with
batches under 256 (the divergence guard's own pass) and over it."""

from __future__ import annotations

import numpy as np
import pytest

import xpnet
from xpnet.errors import XpnetError

N, FEATURES, OUTPUTS = 300, 6, 3


def _targets(kind: str, rng: np.random.Generator) -> np.ndarray:
    labels = rng.integers(0, OUTPUTS, N)
    if kind == "labels":
        return labels
    if kind == "one-hot":
        return np.eye(OUTPUTS, dtype=np.float32)[labels]
    if kind == "multi-label":
        return (rng.random((N, OUTPUTS)) < 0.4).astype(np.float32)
    if kind == "regression-1d":
        return rng.normal(size=N).astype(np.float32)
    if kind == "counts-1d":
        return rng.poisson(2.0, size=N).astype(np.float32)
    if kind == "counts-2d":
        return rng.poisson(2.0, size=(N, OUTPUTS)).astype(np.float32)
    return rng.normal(size=(N, OUTPUTS)).astype(np.float32)


# (target kind, loss, outputs, task)
CASES = [
    ("labels", "cross-entropy", OUTPUTS, "classification"),
    ("labels", "mse", OUTPUTS, "classification"),
    ("labels", "bce", OUTPUTS, "classification"),
    ("one-hot", "cross-entropy", OUTPUTS, "classification"),
    ("one-hot", "mse", OUTPUTS, "regression"),
    ("multi-label", "bce", OUTPUTS, "regression"),
    ("multi-label", "mse", OUTPUTS, "regression"),
    ("regression-1d", "mse", 1, "regression"),
    ("regression-2d", "mse", OUTPUTS, "regression"),
    ("counts-1d", "poisson", 1, "regression"),
    ("counts-2d", "poisson", OUTPUTS, "regression"),
]


@pytest.mark.parametrize("batch_size", [32, 300])
@pytest.mark.parametrize(("kind", "loss", "outputs", "task"), CASES)
def test_item15_every_target_kind_on_array_api_strict(
    strict_backend, kind, loss, outputs, task, batch_size
):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(N, FEATURES)).astype(np.float32)
    y = _targets(kind, rng)
    model = xpnet.mlp(
        [FEATURES, 8, outputs],
        loss=loss,
        device=strict_backend,
        seed=0,
        optimizer=xpnet.SGD(lr=0.01),
    )
    history = model.fit(X, y, epochs=2, batch_size=batch_size, validation_split=0.2)
    assert model.task == task and len(history) == 2
    assert np.isfinite(history["loss"]).all()
    scores = model.evaluate(X, y, batch_size=100)
    assert np.isfinite(scores["loss"])
    predicted = model.predict(X[:5])
    if task == "regression":
        assert predicted.shape == ((5,) if y.ndim == 1 else (5, outputs))
        assert np.isfinite(predicted).all()
    else:
        assert predicted.shape == (5,)
        assert model.predict_proba(X[:5]).shape == (5, outputs)


@pytest.mark.parametrize("y", [np.int64(1), np.float32(0.5)])
def test_item15_a_0d_target_is_one_line(numpy_backend, y):
    model = xpnet.mlp([FEATURES, 3], device=numpy_backend, seed=0)
    X = np.zeros((1, FEATURES), dtype=np.float32)
    with pytest.raises(XpnetError, match="y must hold one target per sample"):
        model.fit(X, y)
    with pytest.raises(XpnetError, match="y must hold one target per sample"):
        model.fit(X, 1)
