import importlib.util
import time

import numpy as np
import pytest
from gradcheck import assert_gradient, numeric_gradient

import xpnet
from xpnet import Dense, Sequential
from xpnet.training import DivergenceGuard

HAS_TORCH = importlib.util.find_spec("torch") is not None


def _three_layer(
    backend, activation="tanh", loss="cross_entropy", outputs=3, head=None
):
    layers = [
        Dense(4, 6),
        xpnet.get_activation(activation),
        Dense(6, 5),
        xpnet.get_activation(activation),
        Dense(5, outputs),
        *([xpnet.get_activation(head)] if head else []),
    ]
    return Sequential(layers, loss=loss, device=backend, dtype="float64", seed=3)


@pytest.mark.parametrize(
    "activation,loss,outputs,head",
    [
        ("tanh", "cross_entropy", 3, None),
        ("gelu", "mse", 3, None),
        ("softplus", "bce", 1, None),
        ("elu", "cross_entropy", 3, None),
        # the output heads of --output-activation, under MSE (the classic net)
        ("relu", "mse", 3, "sigmoid"),
        ("tanh", "mse", 3, "softmax"),
    ],
)
def test_whole_mlp_gradients_match_finite_differences(
    backend, activation, loss, outputs, head
):
    model = _three_layer(backend, activation, loss, outputs, head)
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
                f"mlp-{activation}-{loss}{'-' + head if head else ''}.{i}.{name}"
                f"[{backend.name}]",
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
    # evaluate after the last epoch sees the weights its validation pass saw,
    # and its accuracy is the share of predictions that are right.
    result = model.evaluate(X, y)
    assert result == {
        "loss": history["val_loss"][-1],
        "accuracy": history["val_accuracy"][-1],
    }
    assert result["accuracy"] == np.mean(model.predict(X) == y)


def _generic_numpy_backend() -> xpnet.Backend:
    """NumPy without its native fast paths: the generic Array API reference."""
    from xpnet.fastpaths import Ops

    ref = xpnet.resolve("cpu", "numpy")
    ref = xpnet.Backend(ref.name, ref.xp, ref.device, ref.device_name)
    ref.__dict__["ops"] = Ops(ref.xp, ref.device, on_cpu=True)  # cached_property
    return ref


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_same_seed_same_numbers_on_every_backend(backend, optimizer):
    """Every backend, NumPy's native fast paths included, against the generic
    path (NumPy with the reference Ops, updates out of place)."""
    rng = np.random.default_rng(5)
    X, y = rng.normal(size=(200, 8)), rng.integers(0, 4, size=200)

    def run(b, inplace=None):
        opt = xpnet.get_optimizer(optimizer, lr=0.05, inplace=inplace)
        model = xpnet.mlp(
            [8, 16, 16, 4], device=b, dtype="float64", seed=11, optimizer=opt
        )
        start = model.state_dict()
        history = model.fit(X, y, epochs=2, batch_size=20)  # 20 updates
        assert model.optimizer.iterations == 20
        return start, history["loss"], model.state_dict()

    reference = _generic_numpy_backend()
    assert reference.ops.name == "generic"
    ref_start, ref_loss, ref_end = run(reference, inplace=False)
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
    history = model.fit(X, Y, epochs=40, batch_size=32, validation_data=(X, Y))
    assert history["loss"][-1] < 0.05 * history["loss"][0]
    # A regressor: no accuracy anywhere, predict returns the values.
    assert model.task == "regression"
    assert set(history["accuracy"]) == set(history["val_accuracy"]) == {None}
    assert model.evaluate(X, Y)["accuracy"] is None
    values = model.predict(X)
    assert values.shape == (256, 2) and values.dtype == np.float32
    assert np.mean((values - Y) ** 2) < 0.05 * np.mean(Y**2)
    _one_line_error(lambda: model.predict_proba(X), "predict_proba is for classif")


def test_regression_on_one_column_predicts_the_targets_shape(numpy_backend):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(64, 3))
    flat = xpnet.mlp([3, 8, 1], loss="mse", device=numpy_backend)
    flat.fit(X, X[:, 0], epochs=2)
    assert flat.predict(X).shape == (64,)
    column = xpnet.mlp([3, 8, 1], loss="mse", device=numpy_backend)
    column.fit(X, X[:, :1], epochs=2)
    assert column.predict(X).shape == (64, 1)
    # BCE on float targets is a regressor too; predict gives the sigmoid.
    bce = xpnet.mlp([3, 8, 1], loss="bce", device=numpy_backend)
    bce.fit(X, (X[:, 0] > 0) * 0.8 + 0.1, epochs=2)
    assert bce.task == "regression"
    p = bce.predict(X)
    assert p.shape == (64,) and np.all((p > 0) & (p < 1)) and len(np.unique(p)) > 2
    np.testing.assert_allclose(
        p, 1 / (1 + np.exp(-bce.forward(X.astype(np.float32))[:, 0])), rtol=1e-5
    )


@pytest.mark.parametrize("loss", ["mse", "bce"])
def test_integer_labels_make_a_classifier_whatever_the_loss(numpy_backend, loss):
    X, y = _xor(200)
    model = xpnet.mlp([2, 16, 2], device=numpy_backend, loss=loss)
    history = model.fit(X, y, epochs=5, batch_size=16)
    assert model.task == "classification"
    assert history["accuracy"][-1] is not None
    assert model.predict(X).dtype == np.int64
    np.testing.assert_array_equal(
        model.predict(X), model.predict_proba(X).argmax(axis=1)
    )


def test_cross_entropy_probability_rows_stay_a_classifier(numpy_backend):
    X, y = _xor(100)
    model = xpnet.mlp([2, 8, 2], device=numpy_backend)
    history = model.fit(X, np.eye(2)[y] * 0.9 + 0.05, epochs=2)
    assert model.task == "classification" and history["accuracy"][-1] is not None
    assert model.predict(X).shape == (100,)


def test_targets_of_the_other_kind_are_refused(numpy_backend):
    X, y = _xor(100)
    classifier = xpnet.mlp([2, 8, 2], loss="mse", device=numpy_backend)
    classifier.fit(X, y)
    floats = np.eye(2)[y] * 1.0
    _one_line_error(lambda: classifier.fit(X, floats), "y holds float values but")
    _one_line_error(lambda: classifier.evaluate(X, floats), "is a classifier")
    regressor = xpnet.mlp([2, 8, 2], loss="mse", device=numpy_backend)
    _one_line_error(
        lambda: regressor.fit(X, floats, validation_data=(X, y)),
        "validation y holds integer labels but this model is a regressor",
    )
    regressor.fit(X, floats)
    _one_line_error(lambda: regressor.fit(X, y), "is a regressor")
    _one_line_error(lambda: regressor.evaluate(X, y), "pass float targets")


def test_checkpoints_keep_the_task(numpy_backend, tmp_path, monkeypatch):
    from xpnet.checkpoint import load_checkpoint, save_checkpoint

    X = np.random.default_rng(2).normal(size=(32, 3))
    model = xpnet.mlp([3, 4, 1], loss="mse", device=numpy_backend)
    save_checkpoint(tmp_path / "new.npz", model)
    assert load_checkpoint(tmp_path / "new.npz", "cpu")[0].task is None
    model.fit(X, X[:, 0], epochs=1)
    save_checkpoint(tmp_path / "r.npz", model)
    loaded = load_checkpoint(tmp_path / "r.npz", "cpu")[0]
    assert (loaded.task, loaded.target_ndim) == ("regression", 1)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    # Checkpoints from before the task was recorded held classifiers.
    old = Sequential.config
    monkeypatch.setattr(
        Sequential,
        "config",
        lambda self: {k: v for k, v in old(self).items() if k != "task"},
    )
    save_checkpoint(tmp_path / "old.npz", model)
    assert load_checkpoint(tmp_path / "old.npz", "cpu")[0].task == "classification"


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
        [2, 16, 2], device=numpy_backend, optimizer=xpnet.SGD(lr=1e20, momentum=0.9)
    )
    with np.errstate(all="ignore"):
        _one_line_error(
            lambda: model.fit(X * 1e3, y, epochs=3),
            r"training diverged in epoch \d: the loss is (nan|inf).*lower the learning "
            "rate",
        )


def test_loss_far_above_the_start_stops_the_run(numpy_backend):
    X, y = _xor(200)
    model = xpnet.mlp(
        [2, 16, 2], device=numpy_backend, optimizer=xpnet.SGD(lr=100, momentum=0.9)
    )
    ends = []
    with np.errstate(all="ignore"):
        _one_line_error(
            lambda: model.fit(X, y, epochs=3, on_epoch_end=ends.append),
            r"training diverged in epoch 1: the loss [\d.e+]+ is over 100x the "
            r"starting loss 0\.7\d*; lower the learning rate \(now 100\)",
        )
    assert ends == []


def test_non_finite_weights_stop_the_run_before_on_epoch_end(numpy_backend):
    X, y = _xor(64)
    model = xpnet.mlp([2, 4, 2], device=numpy_backend)
    ends = []

    def poison(samples_done):
        # After the epoch's last step: its loss is finite, a weight is not.
        if samples_done == 64 and not ends:
            model.layers[0].params["W"][0, 0] = np.nan

    _one_line_error(
        lambda: model.fit(X, y, epochs=2, on_batch=poison, on_epoch_end=ends.append),
        "training diverged in epoch 1: the weights hold NaN or infinite values",
    )
    assert ends == []


def test_non_finite_validation_loss_stops_the_run(numpy_backend):
    X, y = _xor(64)
    model = xpnet.mlp([2, 4, 2], device=numpy_backend)
    ends = []
    huge = np.full((8, 2), 3e38, dtype=np.float32)  # finite, but overflows
    with np.errstate(all="ignore"):
        _one_line_error(
            lambda: model.fit(
                X,
                y,
                epochs=2,
                validation_data=(huge, y[:8]),
                on_epoch_end=ends.append,
            ),
            "training diverged in epoch 1: the validation loss is nan",
        )
    assert ends == []


def test_divergence_reference_never_falls_near_zero(numpy_backend):
    # A well-trained classifier: its own loss is ~0, the reference stays ln K.
    X, y = _xor()
    model = xpnet.mlp([2, 16, 16, 2], device=numpy_backend, seed=0)
    model.fit(X, y, epochs=60, batch_size=16)
    guard = DivergenceGuard(model, model.to_device(X), model.to_device(y), 16)
    assert guard.reference == pytest.approx(np.log(2))
    assert guard.limit == 100 * guard.reference
    # Zero outputs for zero targets: the floor.
    zero = xpnet.mlp([2, 3], loss="mse", device=numpy_backend)
    zero.load_state_dict({k: 0 * v for k, v in zero.state_dict().items()})
    Xd, yd = zero.to_device(X, "float32"), zero.to_device(np.zeros((400, 3)), "float32")
    guard = DivergenceGuard(zero, Xd, yd, 32)
    assert (guard.limit, guard.reference) == (1.0, 0.01)


def test_large_batches_take_the_reference_from_the_first_step(
    numpy_backend, monkeypatch
):
    """With batch_size >= 256 the divergence reference comes from the first
    step's outputs before its update (read back with the first epoch's
    metrics): no forward pass of its own, and the value a separate pass on
    the same samples measures."""
    rng = np.random.default_rng(4)
    X, y = rng.normal(size=(600, 8)), rng.integers(0, 3, size=600)
    twin = xpnet.mlp([8, 16, 3], device=numpy_backend, seed=1)
    Xd, yd = twin.to_device(X, "float32"), twin.to_device(y)
    expected = DivergenceGuard(twin, Xd, yd, 16)  # its own pass on X[:256]
    assert expected.measured and expected.rows == 256

    model = xpnet.mlp([8, 16, 3], device=numpy_backend, seed=1)
    rows_seen = []
    forward = model.forward
    monkeypatch.setattr(
        model, "forward", lambda x: rows_seen.append(x.shape[0]) or forward(x)
    )
    guards = []
    set_reference = DivergenceGuard.set_reference

    def spy(self, *terms):
        set_reference(self, *terms)
        guards.append(self)

    monkeypatch.setattr(DivergenceGuard, "set_reference", spy)
    model.fit(X, y, epochs=2, batch_size=256, shuffle=False)
    # The steps' passes, then the check of each epoch's final weights on the
    # reference rows (issue 16 item 12): no pass for the reference itself.
    assert rows_seen == [256, 256, 88, 256] * 2
    assert len(guards) == 1 and guards[0].rows == 256
    assert guards[0].reference == pytest.approx(expected.reference, rel=1e-6)
    assert guards[0].limit == pytest.approx(expected.limit, rel=1e-6)


def test_one_output_cross_entropy_and_double_mappings_are_refused():
    _one_line_error(
        lambda: xpnet.mlp([3, 4, 1], device="cpu"),
        "cross-entropy needs at least 2 outputs.*use loss='bce'",
    )
    _one_line_error(
        lambda: xpnet.mlp([3, 4], output_activation="softmax", device="cpu"),
        r"ends with a Softmax layer but CrossEntropy applies the softmax itself.*"
        r"remove the Softmax layer.*CrossEntropy\(from_logits=False\)",
    )
    _one_line_error(
        lambda: Sequential(
            [Dense(3, 1), xpnet.get_activation("sigmoid"), xpnet.Identity()],
            loss="bce",
            device="cpu",
        ),
        r"ends with a Sigmoid layer but BinaryCrossEntropy applies the sigmoid",
    )
    # The mappings are fine with losses that expect them.
    from xpnet.losses import BinaryCrossEntropy, CrossEntropy

    xpnet.mlp(
        [3, 4],
        output_activation="softmax",
        loss=CrossEntropy(from_logits=False),
        device="cpu",
    )
    xpnet.mlp(
        [3, 1],
        output_activation="sigmoid",
        loss=BinaryCrossEntropy(from_logits=False),
        device="cpu",
    )
    xpnet.mlp([3, 2], output_activation="sigmoid", loss="mse", device="cpu")


def test_a_softmax_output_on_one_output_is_refused():
    _one_line_error(
        lambda: xpnet.mlp(
            [3, 1], output_activation="softmax", loss="mse", device="cpu"
        ),
        r"a Softmax output layer needs at least 2 outputs.*use a Sigmoid output",
    )
    xpnet.mlp([3, 1], output_activation="sigmoid", loss="mse", device="cpu")


def test_mlp_init_applies_to_every_dense_layer():
    # The classic recipe's He init on all layers, the sigmoid-fed one included;
    # "auto" keeps Glorot there.
    def inits(model):
        return [layer.init for layer in model.layers if isinstance(layer, Dense)]

    he = xpnet.mlp(
        [4, 3, 2],
        output_activation="sigmoid",
        init="he_normal",
        loss="mse",
        device="cpu",
    )
    assert inits(he) == ["he_normal", "he_normal"]
    assert he.output_activation == "sigmoid"
    auto = xpnet.mlp([4, 3, 2], output_activation="sigmoid", loss="mse", device="cpu")
    assert inits(auto) == ["auto", "auto"]
    assert xpnet.mlp([4, 3, 2], device="cpu").output_activation == "identity"
    _one_line_error(
        lambda: xpnet.mlp([4, 2], init="kaiming", device="cpu"),
        "unknown initialiser 'kaiming'",
    )


def test_sigmoid_mse_classifier_probabilities_are_its_sigmoid_outputs(numpy_backend):
    """predict_proba of the classic sigmoid-MSE net: each output as it is, in
    [0, 1], not normalised; predict is their arg-max."""
    X, y = _xor(200)
    y4 = y + 2 * (X[:, 0] > 0)  # 4 classes, one per quadrant
    model = xpnet.mlp(
        [2, 8, 4],
        "tanh",
        output_activation="sigmoid",
        loss="mse",
        device=numpy_backend,
        seed=1,
    )
    model.fit(X, y4, epochs=3, batch_size=32)
    proba = model.predict_proba(X)
    out = xpnet.to_numpy(model.forward(model.prepare_inputs(X)))
    np.testing.assert_allclose(proba, out, rtol=1e-6)
    assert proba.min() >= 0.0 and proba.max() <= 1.0
    assert not np.allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(model.predict(X), proba.argmax(axis=1))


def test_bce_on_integer_labels_trains_a_classifier(numpy_backend):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 4))
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5).astype(int)
    model = xpnet.mlp([4, 8, 3], loss="bce", device=numpy_backend, seed=0)
    history = model.fit(X, y, epochs=20, batch_size=32)
    assert 0 < history["loss"][-1] < 0.5 * history["loss"][0]
    assert history["accuracy"][-1] > 0.9
    proba = model.predict_proba(X)
    np.testing.assert_array_equal(model.predict(X), proba.argmax(axis=1))
    assert model.evaluate(X, y)["accuracy"] == np.mean(model.predict(X) == y)


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
        assert model.prepare_inputs(X).shape == (8, 2)
    X[3, 1] = np.inf
    with np.errstate(over="ignore"), pytest.raises(xpnet.XpnetError, match="NaN or"):
        model.prepare_inputs(X)


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
