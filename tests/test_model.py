import importlib.util
import time

import numpy as np
import pytest
from gradcheck import assert_gradient, numeric_gradient

import xpnet
from xpnet import Dense, Sequential

HAS_TORCH = importlib.util.find_spec("torch") is not None


def _three_layer(backend, activation="tanh", loss="cross_entropy", outputs=3):
    layers = [
        Dense(4, 6),
        xpnet.get_activation(activation),
        Dense(6, 5),
        xpnet.get_activation(activation),
        Dense(5, outputs),
    ]
    return Sequential(layers, loss=loss, device=backend, dtype="float64", seed=3)


@pytest.mark.parametrize(
    "activation,loss,outputs",
    [
        ("tanh", "cross_entropy", 3),
        ("gelu", "mse", 3),
        ("softplus", "bce", 1),
        ("elu", "cross_entropy", 3),
    ],
)
def test_whole_mlp_gradients_match_finite_differences(
    backend, activation, loss, outputs
):
    model = _three_layer(backend, activation, loss, outputs)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(7, 4))
    y = rng.integers(0, max(outputs, 2), size=7)
    Xd, yd = backend.asarray(X), backend.asarray(y)

    out = model.forward(Xd)
    _, grad = model.loss.value_and_grad(out, yd)
    model.backward(grad)
    for i, layer in enumerate(model.layers):
        for name in layer.params:
            analytic = xpnet.to_numpy(layer.grads[name])
            start = xpnet.to_numpy(layer.params[name], copy=True)

            def objective(value, layer=layer, name=name, start=start):
                layer.params[name] = backend.asarray(value)
                loss_value = model.loss(model.forward(Xd), yd)
                layer.params[name] = backend.asarray(start)
                return float(xpnet.to_numpy(loss_value))

            assert_gradient(
                f"mlp-{activation}-{loss}.{i}.{name}[{backend.name}]",
                analytic,
                numeric_gradient(objective, start),
            )


def _xor(n=400, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1, 1, size=(n, 2))
    y = ((X[:, 0] > 0) ^ (X[:, 1] > 0)).astype(np.int64)
    X += 0.1 * np.sign(X)  # a margin around the quadrant borders
    return X, y


def test_core_runs_on_array_api_strict(strict_backend):
    X, y = _xor()
    model = xpnet.mlp([2, 16, 2], device=strict_backend, seed=0)
    history = model.fit(X, y, epochs=3, batch_size=50, validation_data=(X, y))
    assert len(history) == 3 and history["loss"][-1] < history["loss"][0]
    assert model.predict(X).shape == (400,)
    assert model.predict_proba(X).shape == (400, 2)
    assert 0 <= model.evaluate(X, y)["accuracy"] <= 1


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_same_seed_same_numbers_on_every_backend(backend, optimizer):
    if backend.name == "numpy":
        pytest.skip("numpy is the reference")
    rng = np.random.default_rng(5)
    X, y = rng.normal(size=(200, 8)), rng.integers(0, 4, size=200)

    def run(b):
        opt = xpnet.get_optimizer(optimizer, lr=0.05)
        model = xpnet.mlp(
            [8, 16, 16, 4], device=b, dtype="float64", seed=11, optimizer=opt
        )
        start = model.state_dict()
        history = model.fit(X, y, epochs=2, batch_size=20)  # 20 updates
        assert model.optimizer.iterations == 20
        return start, history["loss"], model.state_dict()

    ref_start, ref_loss, ref_end = run(xpnet.resolve("cpu", "numpy"))
    start, loss, end = run(backend)
    for key in ref_start:
        assert np.array_equal(ref_start[key], start[key]), key
        np.testing.assert_allclose(end[key], ref_end[key], rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-10)


def test_learns_xor_to_100_percent(backend):
    X, y = _xor()
    model = xpnet.mlp(
        [2, 16, 16, 2], device=backend, seed=0, optimizer=xpnet.SGD(0.1, momentum=0.9)
    )
    history = model.fit(X, y, epochs=60, batch_size=16)
    assert history["accuracy"][-1] == 1.0
    assert (model.predict(X) == y).all()


@pytest.mark.slow
def test_mnist_subset_reaches_93_percent(mnist_subset):
    x_train, y_train, x_test, y_test = mnist_subset
    assert len(x_train) == 5000 and len(x_test) == 10000
    model = xpnet.mlp(
        [784, 256, 10],
        "relu",
        device="cpu",
        seed=0,
        optimizer=xpnet.SGD(0.1, momentum=0.9),
    )
    start = time.perf_counter()
    history = model.fit(
        x_train, y_train, epochs=15, batch_size=64, validation_data=(x_test, y_test)
    )
    seconds = time.perf_counter() - start
    best = max(history["val_accuracy"])
    print(
        f"\nMNIST 5k subset, 784-256-10 ReLU, 15 epochs: test accuracy "
        f"{history['val_accuracy'][-1]:.4f} (best {best:.4f}) in {seconds:.1f} s"
    )
    assert history["val_accuracy"][-1] >= 0.93


def test_resuming_equals_training_straight_through(backend):
    X, y = _xor(200)

    def model():
        return xpnet.mlp(
            [2, 8, 2],
            device=backend,
            dtype="float64",
            seed=4,
            optimizer=xpnet.Adam(0.01),
        )

    straight = model()
    straight.fit(X, y, epochs=4, batch_size=32)
    split = model()
    split.fit(X, y, epochs=2, batch_size=32)
    history = split.fit(X, y, epochs=2, batch_size=32)
    assert history["epoch"] == [3, 4]
    for key, value in straight.state_dict().items():
        np.testing.assert_array_equal(split.state_dict()[key], value)


def test_step_loop_never_reads_the_device(strict_backend, monkeypatch):
    """Reads to the host per fit must not grow with the number of batches."""
    import array_api_strict

    reads = []
    cls = type(array_api_strict.asarray(0.0))
    for method in (
        "__float__",
        "__int__",
        "__bool__",
        "__index__",
        "__array__",
        "__dlpack__",
    ):
        original = getattr(cls, method, None)
        if original is None:
            continue

        def counting(self, *args, _original=original, _m=method, **kwargs):
            reads.append(_m)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(cls, method, counting)
    X, y = _xor(400)
    counts = []
    for batch_size in (200, 10):  # 2 and 40 batches per epoch
        model = xpnet.mlp([2, 8, 2], device=strict_backend, seed=0)
        reads.clear()
        model.fit(X, y, epochs=2, batch_size=batch_size)
        counts.append(len(reads))
    assert counts[0] == counts[1], counts
    assert counts[0] <= 10


def test_state_dict_round_trip_and_independence(numpy_backend):
    a = xpnet.mlp([4, 5, 3], device=numpy_backend, seed=1)
    b = xpnet.mlp([4, 5, 3], device=numpy_backend, seed=2)
    state = a.state_dict()
    b.load_state_dict(state)
    X = np.random.default_rng(0).normal(size=(6, 4))
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    a.fit(X, np.array([0, 1, 2, 0, 1, 2]), epochs=1, batch_size=3)
    # Training a does not change the dict it handed out, nor b.
    np.testing.assert_array_equal(state["0.W"], b.state_dict()["0.W"])
    assert not np.array_equal(state["0.W"], a.state_dict()["0.W"])
    # Nor does training b, which loaded it.
    before = {k: v.copy() for k, v in state.items()}
    b.fit(X, np.array([0, 1, 2, 0, 1, 2]), epochs=1, batch_size=3)
    for key in state:
        np.testing.assert_array_equal(state[key], before[key])


def test_load_state_dict_rejects_wrong_shapes(numpy_backend):
    model = xpnet.mlp([4, 5, 3], device=numpy_backend)
    state = model.state_dict()
    state["0.W"] = np.zeros((5, 5))
    with pytest.raises(xpnet.XpnetError, match=r"state 0.W has shape \(5, 5\)"):
        model.load_state_dict(state)
    with pytest.raises(xpnet.XpnetError, match=r"missing \['2.b'\]"):
        model.load_state_dict({k: v for k, v in state.items() if k != "2.b"})


def test_float32_by_default_and_float64_on_request(numpy_backend):
    assert (
        xpnet.mlp([2, 2], device=numpy_backend).state_dict()["0.W"].dtype == np.float32
    )
    model = xpnet.mlp([2, 2], device=numpy_backend, dtype="float64")
    assert model.state_dict()["0.W"].dtype == np.float64


def test_history_records_per_epoch_figures(numpy_backend):
    X, y = _xor(100)
    model = xpnet.mlp([2, 4, 2], device=numpy_backend)
    history = model.fit(X, y, epochs=2, batch_size=30, validation_data=(X, y))
    record = history.records[-1]
    assert set(record) >= {
        "epoch",
        "loss",
        "accuracy",
        "val_loss",
        "val_accuracy",
        "seconds",
        "samples_per_second",
    }
    assert record["seconds"] > 0 and record["samples_per_second"] > 0


def test_mlp_regression_targets_with_mse(numpy_backend):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(256, 3))
    Y = np.stack([X.sum(axis=1), X[:, 0] * 0.5], axis=1)
    model = xpnet.mlp(
        [3, 32, 2], "tanh", loss="mse", device=numpy_backend, optimizer=xpnet.Adam(0.01)
    )
    history = model.fit(X, Y, epochs=40, batch_size=32)
    assert history["accuracy"][-1] is not None  # 2 columns: arg-max "accuracy"
    assert history["loss"][-1] < 0.05 * history["loss"][0]


def _one_line_error(call, match):
    with pytest.raises(xpnet.XpnetError, match=match) as info:
        call()
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "bad,match",
    [
        (
            lambda m, X, y: m.fit(X[:, :3], y),
            r"X has 3 features but the model's first "
            r"layer expects 4",
        ),
        (
            lambda m, X, y: m.fit(X, np.where(y == 2, 7, y)),
            r"y holds labels from 0 to 7, "
            r"outside \[0, 3\)",
        ),
        (lambda m, X, y: m.fit(X, y - 1), r"labels from -1 to 1, outside \[0, 3\)"),
        (
            lambda m, X, y: m.fit(np.where(X > 1, np.nan, X), y),
            "X contains NaN or infinite values",
        ),
        (
            lambda m, X, y: m.fit(np.full_like(X, np.inf), y),
            "X contains NaN or infinite",
        ),
        (lambda m, X, y: m.fit(X[:0], y[:0]), r"X is empty \(0 samples\)"),
        (lambda m, X, y: m.fit(X, y[:-1]), "y has 29 rows but X has 30"),
        (lambda m, X, y: m.fit(X.reshape(30, 2, 2), y), "X must be 2-D"),
        (lambda m, X, y: m.fit(X, y.astype(float)), "y must hold integer class labels"),
        (
            lambda m, X, y: m.fit(X, y, batch_size=0),
            "batch_size must be an integer >= 1",
        ),
        (lambda m, X, y: m.fit(X, y, epochs=-1), "epochs must be an integer >= 0"),
        (lambda m, X, y: m.predict(np.hstack([X, X[:, :1]])), "X has 5 features"),
        (lambda m, X, y: m.evaluate(X, y + 3), r"outside \[0, 3\)"),
    ],
)
def test_bad_input_gets_a_clear_error(numpy_backend, bad, match):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(30, 4)), rng.integers(0, 3, size=30)
    y[:3] = [0, 1, 2]
    model = xpnet.mlp([4, 5, 3], device=numpy_backend)
    _one_line_error(lambda: bad(model, X, y), match)


def test_diverging_run_stops_with_advice(numpy_backend):
    X, y = _xor(64)
    model = xpnet.mlp(
        [2, 16, 2], device=numpy_backend, optimizer=xpnet.SGD(lr=1e6, momentum=0.9)
    )
    with np.errstate(all="ignore"):
        _one_line_error(
            lambda: model.fit(X * 1e3, y, epochs=3),
            r"training diverged in epoch \d: the loss is (nan|inf).*lower the learning "
            "rate",
        )


def test_architecture_errors():
    _one_line_error(
        lambda: Sequential([Dense(3, 4), Dense(5, 2)], device="cpu"),
        "layer sizes do not chain: a Dense with 4 outputs feeds a Dense with 5 inputs",
    )
    _one_line_error(lambda: xpnet.mlp([3], device="cpu"), "mlp needs at least")
    _one_line_error(
        lambda: xpnet.mlp([3, 2], "relu6", device="cpu"), "unknown activation 'relu6'"
    )
    _one_line_error(
        lambda: xpnet.mlp([3, 2], device="cpu", optimizer="lbfgs"),
        "unknown optimizer 'lbfgs': choose one of sgd, adam, adamw",
    )
    _one_line_error(
        lambda: xpnet.mlp([3, 2], device="cpu", dtype="float16"),
        "unknown dtype 'float16'",
    )


def test_huge_but_finite_inputs_are_accepted(numpy_backend):
    # Their sum overflows float32: the fast check must fall back, not reject.
    X = np.full((8, 2), 3e38, dtype=np.float32)
    model = xpnet.mlp([2, 2], device=numpy_backend)
    with np.errstate(over="ignore"):
        assert model._prepare_x(X).shape == (8, 2)
    X[3, 1] = np.inf
    with np.errstate(over="ignore"), pytest.raises(xpnet.XpnetError, match="NaN or"):
        model._prepare_x(X)


def test_check_inputs_false_skips_value_scans_only(strict_backend, monkeypatch):
    import array_api_strict

    X, y = _xor(100)
    model = xpnet.mlp([2, 4, 2], device=strict_backend)
    Xd, yd = strict_backend.asarray(X), strict_backend.asarray(y)
    reads = []
    cls = type(Xd)
    for method in ("__float__", "__int__", "__bool__"):
        original = getattr(cls, method)

        def counting(self, *a, _o=original, _m=method, **k):
            reads.append(_m)
            return _o(self, *a, **k)

        monkeypatch.setattr(cls, method, counting)
    model.fit(Xd, yd, epochs=1, batch_size=50, check_inputs=False)
    unchecked = len(reads)
    reads.clear()
    model.fit(Xd, yd, epochs=1, batch_size=50)
    assert len(reads) == unchecked + 3  # the finite scan and the label min/max
    with pytest.raises(xpnet.XpnetError, match="X has 3 features"):
        model.fit(array_api_strict.ones((4, 3)), yd[:4], check_inputs=False)
