"""xpnet.training: the step's extension points, fit's order of visits, and
learning-rate schedules (round trips, inverse-time decay through fit and the
CLI)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import xpnet
from xpnet.schedules import (
    SCHEDULES,
    Constant,
    CosineDecay,
    ExponentialDecay,
    InverseTimeDecay,
    StepDecay,
    Warmup,
    schedule_from_config,
    schedule_name,
)
from xpnet.training import TrainStep, make_train_step


def _model(backend, lr=0.1, momentum=0.0, seed=2):
    optimizer = xpnet.SGD(lr, momentum=momentum)
    return xpnet.mlp(
        [6, 8, 3], device=backend, dtype="float64", seed=seed, optimizer=optimizer
    )


def _data(n=40, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 6)), rng.integers(0, 3, size=n)


def _state(model):
    return model.state_dict()


def _assert_same_state(a, b):
    sa, sb = _state(a), _state(b)
    assert sa.keys() == sb.keys()
    for key in sa:
        np.testing.assert_array_equal(sa[key], sb[key], err_msg=key)


# ------------------------------------------------------------------ extension points


def _read_only_buffers(model):
    """Make the model take the path of namespaces whose arrays cannot be
    written (layers return new gradient arrays; updates make new buffers)."""
    model.parameters.writeable = False
    model.parameters._bind_grads()


@pytest.mark.parametrize("read_only", [False, True])
def test_reduce_gradients_doubling_equals_doubled_lr(backend, read_only):
    X, y = _data()
    doubled = _model(backend, lr=0.1)
    reference = _model(backend, lr=0.2)
    if read_only:
        _read_only_buffers(doubled)
        _read_only_buffers(reference)
    calls = []

    def reduce(grads):
        calls.append(grads)
        return grads * 2.0

    step = TrainStep(doubled, reduce_gradients=reduce)
    xd, yd = doubled.to_device(X, "float64"), doubled.to_device(y)
    for lo in range(0, 40, 10):
        step(xd[lo : lo + 10, ...], yd[lo : lo + 10])
        reference.train_step(xd[lo : lo + 10, ...], yd[lo : lo + 10])
    assert len(calls) == 4  # once per step
    assert all(tuple(g.shape) == (doubled.parameters.size,) for g in calls)
    _assert_same_state(doubled, reference)
    assert not np.array_equal(_state(doubled)["0.W"], _state(_model(backend))["0.W"])


def test_reduce_gradients_is_called_once_per_step_in_fit(numpy_backend):
    X, y = _data(n=45)
    model = _model(numpy_backend)
    calls = []

    def reduce(grads):
        calls.append(1)
        return grads

    step = make_train_step(model, reduce_gradients=reduce)
    history = xpnet.training.fit(model, X, y, epochs=2, batch_size=10, step=step)
    assert len(history) == 2
    assert len(calls) == 2 * 5 == model.optimizer.iterations  # 5 batches, 1 partial


def test_make_train_step_uses_the_backends_replacement(numpy_backend, monkeypatch):
    model = _model(numpy_backend)
    seen = {}

    def native_step(xb, yb):
        seen["shape"] = tuple(xb.shape)
        return model.xp.zeros(()), model.forward(xb)

    def make_step(m, **options):
        seen["model"], seen["options"] = m, options
        return native_step

    monkeypatch.setattr(model.backend.ops, "make_step", make_step)
    reduce = lambda g: g  # noqa: E731
    assert make_train_step(model, reduce_gradients=reduce) is native_step
    assert seen["model"] is model and seen["options"] == {"reduce_gradients": reduce}
    X, y = _data(n=12)
    before = _state(model)
    model.fit(X, y, epochs=1, batch_size=12)  # fit steps through the replacement
    assert seen["shape"] == (12, 6)
    _assert_same_state_dict(before, _state(model))  # the fake step updates nothing


def _assert_same_state_dict(a, b):
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_make_train_step_falls_back_to_the_generic_step(numpy_backend):
    model = _model(numpy_backend)
    assert numpy_backend.ops.make_step(model) is None
    step = make_train_step(model)
    assert type(step) is TrainStep and step.model is model


# ------------------------------------------------------------------ fit


def test_gathers_reuse_one_buffer_and_match_the_generic_path(
    numpy_backend, monkeypatch
):
    """NumPy gathers each chunk of shuffled rows into one buffer per fit (no
    fresh pages per chunk), which the steps read while it is overwritten chunk
    after chunk: the numbers must still be the generic path's (fresh arrays),
    with several chunks, a short last one, and batches big enough for the
    native row reductions of the loss."""
    from xpnet.fastpaths import Ops
    from xpnet.native_numpy import NumpyOps

    # 3 batches of 150 rows (8 features) per chunk: 1000 rows make 3 chunks,
    # the last one short with a short batch.
    monkeypatch.setattr(NumpyOps, "gather_bytes", 3 * 150 * 8 * 4)
    outs = []
    take_rows = NumpyOps.take_rows

    def spy(self, x, rows, out=None):
        outs.append(out)
        return take_rows(self, x, rows, out)

    monkeypatch.setattr(NumpyOps, "take_rows", spy)
    rng = np.random.default_rng(3)
    X, y = rng.normal(size=(1000, 8)), rng.integers(0, 10, size=1000)

    def run(backend):
        model = xpnet.mlp([8, 16, 10], device=backend, dtype="float64", seed=2)
        history = model.fit(X, y, epochs=2, batch_size=150)
        return history, model.state_dict()

    b = numpy_backend
    generic = xpnet.Backend(b.name, b.xp, b.device, b.device_name)
    generic.__dict__["ops"] = Ops(generic.xp, generic.device, on_cpu=True)
    ref_history, ref_state = run(generic)
    history, state = run(numpy_backend)
    assert len(outs) == 6 and all(o is not None for o in outs)
    assert len({o.ctypes.data for o in outs}) == 1  # one buffer in each fit
    for key in ("loss", "accuracy"):
        np.testing.assert_allclose(history[key], ref_history[key], rtol=1e-12)
    for key, value in ref_state.items():
        np.testing.assert_allclose(state[key], value, rtol=1e-10, atol=1e-13)


def test_fit_without_shuffle_visits_samples_in_order(backend):
    X, y = _data(n=47)
    fitted = _model(backend, momentum=0.9)
    manual = _model(backend, momentum=0.9)
    rng_state = fitted.shuffle_rng.bit_generator.state
    history = fitted.fit(X, y, epochs=2, batch_size=10, shuffle=False)
    xd, yd = manual.to_device(X, "float64"), manual.to_device(y)
    losses = []
    for _ in range(2):
        total = 0.0
        for lo in range(0, 47, 10):
            hi = min(lo + 10, 47)
            loss, _ = manual.train_step(xd[lo:hi, ...], yd[lo:hi])
            total += float(loss) * (hi - lo)
        losses.append(total / 47)
    _assert_same_state(fitted, manual)
    np.testing.assert_allclose(history["loss"], losses, rtol=1e-12)
    assert fitted.shuffle_rng.bit_generator.state == rng_state  # nothing drawn
    # ... while shuffling visits them in another order
    shuffled = _model(backend, momentum=0.9)
    shuffled.fit(X, y, epochs=2, batch_size=10)
    assert not np.array_equal(_state(shuffled)["0.W"], _state(fitted)["0.W"])


# ------------------------------------------------------------------ schedules

SCHEDULE_EXAMPLES = [
    Constant(0.3),
    InverseTimeDecay(0.2, 0.5),
    StepDecay(0.1, step_size=3, gamma=0.5),
    CosineDecay(0.4, total_steps=10, min_lr=0.01),
    ExponentialDecay(0.3, decay_rate=0.5, decay_steps=4),
    Warmup(StepDecay(0.1, step_size=3, gamma=0.5), warmup_steps=4),
]


def test_every_schedule_has_an_example():
    assert {type(s) for s in SCHEDULE_EXAMPLES} == set(SCHEDULES.values())


@pytest.mark.parametrize("schedule", SCHEDULE_EXAMPLES, ids=repr)
def test_schedule_round_trips_through_its_config(schedule):
    config = {"name": schedule_name(schedule), **schedule.config()}
    back = schedule_from_config(config)
    assert type(back) is type(schedule) and back.config() == schedule.config()
    assert repr(back) == repr(schedule)
    for step in (0, 1, 2, 3, 7, 10, 11, 1000):
        assert back(step) == schedule(step), step


def test_inverse_time_decay_values():
    schedule = InverseTimeDecay(0.2, 0.5)
    assert [schedule(k) for k in range(4)] == [0.2, 0.2 / 1.5, 0.2 / 2.0, 0.2 / 2.5]


def test_fit_with_inverse_time_decay_uses_lr_over_1_plus_decay_k(numpy_backend):
    """Update k (from 0) uses lr / (1 + decay * k): against a manual loop that
    sets a constant rate before each step."""
    X, y = _data(n=30)
    decayed = xpnet.mlp(
        [6, 8, 3],
        device=numpy_backend,
        dtype="float64",
        seed=4,
        optimizer=xpnet.SGD(InverseTimeDecay(0.2, 0.5), momentum=0.9),
    )
    manual = xpnet.mlp(
        [6, 8, 3],
        device=numpy_backend,
        dtype="float64",
        seed=4,
        optimizer=xpnet.SGD(0.2, momentum=0.9),
    )
    decayed.fit(X, y, epochs=2, batch_size=10, shuffle=False)
    xd, yd = manual.to_device(X, "float64"), manual.to_device(y)
    k = 0
    for _ in range(2):
        for lo in range(0, 30, 10):
            manual.optimizer.schedule = Constant(0.2 / (1 + 0.5 * k))
            manual.train_step(xd[lo : lo + 10, ...], yd[lo : lo + 10])
            k += 1
    assert decayed.optimizer.iterations == k == 6
    assert decayed.optimizer.lr == 0.2 / (1 + 0.5 * 6)
    _assert_same_state(decayed, manual)


def test_cli_lr_decay_trains_with_inverse_time_decay(tmp_path):
    """``xpnet train --lr-decay 0.5``: the checkpoint holds InverseTimeDecay(lr,
    0.5), and the next update uses lr / (1 + 0.5 k) after k updates."""
    from xpnet.checkpoint import load_checkpoint

    env = dict(os.environ)
    src = os.path.join(os.path.dirname(xpnet.__file__), os.pardir)
    env["PYTHONPATH"] = os.path.abspath(src) + os.pathsep + env.get("PYTHONPATH", "")
    path = tmp_path / "x.npz"
    argv = ["train", "--dataset", "mnist-sample", "--hidden", "8", "--epochs", "1"]
    argv += ["--lr", "0.2", "--lr-decay", "0.5", "--batch-size", "1000"]
    argv += ["--device", "cpu", "--save", str(path), "--quiet"]
    proc = subprocess.run(
        [sys.executable, "-m", "xpnet", *argv],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    model, _ = load_checkpoint(path, "cpu")
    opt = model.optimizer
    assert type(opt.schedule) is InverseTimeDecay
    assert opt.schedule.config() == {"lr": 0.2, "decay": 0.5}
    k = opt.iterations
    assert k == 5  # one epoch of the 5000-image sample in batches of 1000
    assert opt.lr == 0.2 / (1 + 0.5 * k)
    # The next update: the same as one at a constant lr / (1 + 0.5 k).
    reference, _ = load_checkpoint(path, "cpu")
    reference.optimizer.schedule = Constant(0.2 / (1 + 0.5 * k))
    rng = np.random.default_rng(0)
    xb = rng.uniform(0, 1, size=(16, model.in_features))
    yb = rng.integers(0, 10, size=16)
    for m in (model, reference):
        m.train_step(m.to_device(xb, m.dtype_name), m.to_device(yb))
    _assert_same_state(model, reference)


# -- sample weights (issue 20) ---------------------------------------------------
@pytest.mark.parametrize("targets", ["labels", "regression"])
def test_issue20_fit_sample_weight_equals_repeated_rows(backend, targets):
    """Integer weights train as the rows repeated that many times (one batch
    per epoch: the weighted mean of each batch is the repeated rows' mean),
    on every backend; all-ones weights train as no weights."""
    X, y = _data(n=24)
    if targets == "regression":
        y = X[:, :2] * 1.0
    weight = np.random.default_rng(1).integers(0, 4, size=len(X))
    weight[0] = 1  # not all zero
    runs = {}
    for name, (Xs, ys, ws) in {
        "weighted": (X, y, weight * 1.0),
        "repeated": (np.repeat(X, weight, 0), np.repeat(y, weight, 0), None),
        "ones": (X, y, np.ones(len(X))),
        "none": (X, y, None),
    }.items():
        model = xpnet.mlp(
            [X.shape[1], 6, 2 if targets == "regression" else 3],
            loss="mse" if targets == "regression" else "cross_entropy",
            optimizer=xpnet.SGD(lr=0.1, momentum=0.9),
            device=backend,
            dtype="float64",
            seed=2,
        )
        history = model.fit(
            Xs, ys, epochs=3, batch_size=len(Xs), shuffle=False, sample_weight=ws
        )
        runs[name] = (model.state_dict(), history["loss"])
    for a, b in (("weighted", "repeated"), ("ones", "none")):
        np.testing.assert_allclose(runs[a][1], runs[b][1], rtol=1e-10)
        for key, value in runs[a][0].items():
            np.testing.assert_allclose(value, runs[b][0][key], rtol=1e-9, atol=1e-12)


def test_issue20_fit_sample_weight_is_checked_in_one_line(numpy_backend):
    X, y = _data(n=10)
    model = _model(numpy_backend)
    for weight, message in (
        (np.ones(9), r"sample_weight has shape \(9,\), X has 10 rows"),
        (-np.ones(10), "finite, non-negative weights, not all zero"),
        (np.zeros(10), "finite, non-negative weights, not all zero"),
        (np.full(10, np.nan), "finite, non-negative weights, not all zero"),
    ):
        with pytest.raises(xpnet.XpnetError, match=message) as err:
            model.fit(X, y, sample_weight=weight)
        assert "\n" not in str(err.value)
    with pytest.raises(xpnet.XpnetError, match="validation_split"):
        model.fit(X, y, sample_weight=np.ones(10), validation_split=0.2)
