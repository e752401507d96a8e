"""Issue 18: the callback seam of fit, xpnet.callbacks, schedules and the
resumable state (exact resume mid-patience, mid-warm-up, cosine, plateau)."""

from __future__ import annotations

import csv
import json
import math
import re
import subprocess
import sys

import numpy as np
import pytest

import xpnet
from xpnet.callbacks import (
    Callback,
    CSVLogger,
    EarlyStopping,
    JSONLinesLogger,
    LambdaCallback,
    ModelCheckpoint,
    ReduceLROnPlateau,
    TensorBoard,
)
from xpnet.checkpoint import Checkpoint
from xpnet.errors import XpnetError
from xpnet.schedules import (
    Constant,
    CosineDecay,
    ExponentialDecay,
    StepDecay,
    Warmup,
    schedule_from_config,
    schedule_name,
)

N, BATCH = 60, 16
STEPS = -(-N // BATCH)  # updates per epoch


def _data(n=N, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6))
    y = (X[:, 0] + 0.3 * rng.normal(size=n) > 0).astype(np.int64) + (X[:, 1] > 0.8)
    return X, y


def _validation():
    return _data(40, seed=5)


def _model(lr=0.3, backend="cpu", seed=2):
    optimizer = xpnet.SGD(lr, momentum=0.9)
    return xpnet.mlp(
        [6, 32, 3], device=backend, dtype="float64", seed=seed, optimizer=optimizer
    )


def _flat(model):
    return xpnet.to_numpy(model.parameters.flat).copy()


def _fit(model, epochs, callbacks=(), validation=True):
    X, y = _data()
    return model.fit(
        X,
        y,
        epochs,
        BATCH,
        validation_data=_validation() if validation else None,
        callbacks=list(callbacks),
    )


def _keras_stop_epoch(values, patience, min_delta=0.0):
    """Keras's EarlyStopping rule by hand: (stop epoch or None, best epoch)."""
    best, best_epoch, wait = math.inf, 0, 0
    for epoch, value in enumerate(values, start=1):
        wait += 1
        if value < best - min_delta:
            best, best_epoch, wait = value, epoch, 0
        elif wait >= patience:
            return epoch, best_epoch
    return None, best_epoch


# ------------------------------------------------------------------ schedules


def test_issue18_schedules_equal_their_formulas():
    assert ExponentialDecay(0.1, 0.5, 10)(20) == 0.1 * 0.5**2.0
    assert StepDecay(0.1, 3, 0.5)(7) == 0.1 * 0.5**2
    cosine = CosineDecay(0.1, 8, 0.01)
    warm = Warmup(cosine, 4)
    assert [warm(s) for s in range(4)] == [0.1 * (s + 1) / 4 for s in range(4)]
    assert [warm(4 + s) for s in range(12)] == [cosine(s) for s in range(12)]
    assert cosine(8) == cosine(100) == 0.01
    for schedule in (warm, ExponentialDecay(0.2), StepDecay(0.3), CosineDecay(0.4)):
        saved = {"name": schedule_name(schedule), **schedule.config()}
        again = schedule_from_config(json.loads(json.dumps(saved)))
        assert [again(s) for s in range(30)] == [schedule(s) for s in range(30)]


def test_issue18_history_records_each_epochs_learning_rate():
    """The lr column is the rate of each epoch's first update: the schedule
    at step (epoch - 1) * steps, by hand."""
    schedule = Warmup(CosineDecay(0.2, 5 * STEPS, 0.02), 2 * STEPS)
    model = xpnet.mlp([6, 8, 3], dtype="float64", optimizer=xpnet.SGD(schedule))
    history = _fit(model, 8, validation=False)
    assert history["lr"] == [schedule((e - 1) * STEPS) for e in range(1, 9)]
    assert model.optimizer.iterations == 8 * STEPS


# ------------------------------------------------------------------ the seam


class _Recorder(Callback):
    def __init__(self):
        self.calls = []

    def on_train_begin(self, logs=None):
        self.calls.append(("train_begin", self.params["epochs"]))

    def on_epoch_begin(self, epoch, logs=None):
        self.calls.append(("epoch_begin", epoch))

    def on_epoch_end(self, epoch, logs):
        self.calls.append(("epoch_end", epoch, sorted(logs)))

    def on_train_end(self, logs=None):
        self.calls.append(("train_end", logs["stop_reason"]))


def test_issue18_callbacks_called_in_keras_order_and_stop_training():
    recorder = _Recorder()
    batches = []

    def stop_after_two(epoch, logs):
        if epoch == 2:
            recorder.model.stop_training = True

    history = _fit(
        _model(),
        5,
        [
            recorder,
            LambdaCallback(
                on_epoch_end=stop_after_two,
                on_batch_end=lambda b, logs: batches.append(logs.done),
            ),
        ],
    )
    keys = [
        "accuracy",
        "epoch",
        "loss",
        "lr",
        "samples_per_second",
        "seconds",
        "val_accuracy",
        "val_loss",
    ]
    assert recorder.calls == [
        ("train_begin", 5),
        ("epoch_begin", 1),
        ("epoch_end", 1, keys),
        ("epoch_begin", 2),
        ("epoch_end", 2, keys),
        ("train_end", "callback"),
    ]
    assert len(history) == 2 and history.stop_reason == "callback"
    assert batches == [16, 32, 48, 60] * 2


def test_issue18_a_plain_callback_adds_no_device_read_per_batch(monkeypatch):
    """Callbacks that do not override on_batch_end are not called per batch,
    and the epoch's values are one read-back whatever callbacks ask for."""
    model = _model()
    reads = []
    original = type(model).read_floats
    monkeypatch.setattr(
        type(model),
        "read_floats",
        lambda self, *v: reads.append(len(v)) or original(self, *v),
    )
    watch = [EarlyStopping("loss", patience=5), ReduceLROnPlateau("loss")]
    _fit(model, 3, watch, validation=False)
    # Batch 16 < 256: the guard's own pass first, then one read per epoch.
    assert len(reads) == 4


def test_issue18_training_does_not_import_distributed():
    code = (
        "import sys, numpy as np, xpnet; m = xpnet.mlp([3, 2]);"
        "m.fit(np.zeros((4, 3)), np.array([0, 1, 0, 1]), callbacks=[]);"
        "print(sorted(k for k in sys.modules if k.startswith('xpnet.distributed')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_issue18_not_a_callback_is_one_line():
    with pytest.raises(XpnetError, match="callbacks must be xpnet.callbacks"):
        _fit(_model(), 1, [print])


# ------------------------------------------------------------------ early stopping


def test_issue18_early_stopping_stops_where_the_rule_says_and_restores_best():
    stopper = EarlyStopping(patience=2, restore_best_weights=True)
    model = _model(lr=0.5)
    history = _fit(model, 40, [stopper])
    expected_stop, best_epoch = _keras_stop_epoch(history["val_loss"], 2)
    assert expected_stop is not None, "the problem must overfit for this test"
    assert len(history) == expected_stop == stopper.stopped_epoch
    assert history.stop_reason == "early_stopping"
    assert stopper.best_epoch == best_epoch < expected_stop
    twin = _model(lr=0.5)
    _fit(twin, best_epoch)
    np.testing.assert_array_equal(_flat(model), _flat(twin))


def test_issue18_early_stopping_without_validation_is_one_line():
    with pytest.raises(XpnetError, match="monitors 'val_loss', which needs"):
        _fit(_model(), 2, [EarlyStopping()], validation=False)


def test_issue18_start_from_epoch_and_min_delta():
    stopper = EarlyStopping(
        monitor="loss", patience=1, min_delta=10.0, start_from_epoch=3
    )
    history = _fit(_model(), 10, [stopper], validation=False)
    # Epoch 4 is the first watched (an improvement from inf); epoch 5 cannot
    # beat it by 10.
    assert len(history) == 5 and stopper.best_epoch == 4


# ------------------------------------------------------------------ plateau


def test_issue18_reduce_lr_on_plateau_by_hand():
    plateau = ReduceLROnPlateau(factor=0.5, patience=2, cooldown=1, min_lr=0.01)
    history = _fit(_model(lr=0.5), 30, [plateau])
    factor, best, wait, cooldown = 1.0, math.inf, 0, 0
    for value, used in zip(history["val_loss"], history["lr"], strict=True):
        assert used == 0.5 * factor
        if cooldown > 0:
            cooldown, wait = cooldown - 1, 0
        if value < best - 1e-4:
            best, wait = value, 0
        elif cooldown == 0:
            wait += 1
            if wait >= 2 and 0.5 * factor > 0.01:
                factor = factor * 0.5 if 0.5 * factor * 0.5 >= 0.01 else 0.01 / 0.5
                cooldown, wait = 1, 0
    assert min(history["lr"]) < 0.5, "the plateau rule never fired"


# ------------------------------------------------------------------ checkpoints


def test_issue18_best_checkpoint_equals_that_epochs_weights(tmp_path):
    path = tmp_path / "best.npz"
    best = ModelCheckpoint(path, save_best_only=True)
    history = _fit(_model(lr=0.5), 12, [best])
    values = history["val_loss"]
    assert best.best_epoch == 1 + int(np.argmin(values))
    saved = Checkpoint.from_file(path).model
    twin = _model(lr=0.5)
    _fit(twin, best.best_epoch)
    np.testing.assert_array_equal(_flat(saved), _flat(twin))
    assert saved.epochs_trained == best.best_epoch


def test_issue18_model_checkpoint_refuses_a_file_it_did_not_write(tmp_path):
    path = tmp_path / "taken.npz"
    path.write_bytes(b"someone else's")
    with pytest.raises(XpnetError, match="already exists: pass overwrite=True"):
        _fit(_model(), 1, [ModelCheckpoint(path)])
    assert path.read_bytes() == b"someone else's"
    with pytest.raises(XpnetError, match="must end in .npz"):
        ModelCheckpoint(tmp_path / "x.h5")
    # {epoch} in the name: one file per epoch.
    _fit(_model(), 2, [ModelCheckpoint(tmp_path / "e{epoch}.npz")])
    assert (tmp_path / "e1.npz").exists() and (tmp_path / "e2.npz").exists()


# ------------------------------------------------------------------ exact resume


def _resumable(schedule):
    model = xpnet.mlp(
        [6, 32, 3],
        dtype="float64",
        seed=2,
        optimizer=xpnet.SGD(schedule, momentum=0.9),
    )
    stopper = EarlyStopping(patience=3, restore_best_weights=True)
    plateau = ReduceLROnPlateau(factor=0.5, patience=1, min_delta=0.0)
    return model, [stopper, plateau]


@pytest.mark.parametrize("split", [2, 5])
def test_issue18_exact_resume_mid_warmup_and_mid_patience(tmp_path, split):
    """A run interrupted after ``split`` epochs (inside the 3-epoch warm-up
    for 2; mid-patience and after a plateau cut for 5) and resumed from its
    checkpoint is bit-identical to the uninterrupted run."""
    schedule = Warmup(CosineDecay(0.5, 10 * STEPS, 0.05), 3 * STEPS)
    whole, callbacks = _resumable(schedule)
    history = _fit(whole, 20, callbacks)
    first, callbacks_a = _resumable(schedule)
    part = _fit(first, split, callbacks_a)
    assert part.stop_reason == "epochs"
    path = tmp_path / "run.npz"
    Checkpoint(first, callbacks=callbacks_a, history=part.records).to_file(path)
    saved = Checkpoint.from_file(path)
    _, callbacks_b = _resumable(schedule)
    saved.restore_callbacks(callbacks_b)
    rest = _fit(saved.model, 20 - split, callbacks_b)
    assert [r["epoch"] for r in part.records + rest.records] == [
        r["epoch"] for r in history.records
    ]
    assert rest.stop_reason == history.stop_reason
    assert part["lr"] + rest["lr"] == history["lr"]
    assert part["val_loss"] + rest["val_loss"] == history["val_loss"]
    np.testing.assert_array_equal(_flat(saved.model), _flat(whole))
    assert callbacks_b[0].best_epoch == callbacks[0].best_epoch


def test_issue18_checkpoint_with_bad_callback_arrays_is_refused(tmp_path):
    from xpnet.checkpoint import CheckpointError

    model, callbacks = _resumable(Constant(0.5))
    _fit(model, 2, callbacks)
    path = tmp_path / "run.npz"
    Checkpoint(model, callbacks=callbacks).to_file(path)
    with np.load(path) as archive:
        arrays = dict(archive)
    arrays["cb/early_stopping.best_weights"] = arrays["cb/early_stopping.best_weights"][
        :5
    ]
    np.savez(path, **arrays)
    with pytest.raises(CheckpointError, match="cb/early_stopping.best_weights"):
        Checkpoint.from_file(path)


# ------------------------------------------------------------------ logs


def test_issue18_csv_and_json_lines_logs(tmp_path):
    csv_path, jsonl = tmp_path / "log.csv", tmp_path / "log.jsonl"
    history = _fit(_model(), 3, [CSVLogger(csv_path), JSONLinesLogger(jsonl)])
    rows = list(csv.DictReader(csv_path.open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert [float(r["val_loss"]) for r in rows] == history["val_loss"]
    assert list(rows[0])[:3] == ["epoch", "loss", "accuracy"]
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [line["loss"] for line in lines] == history["loss"]
    # A second run into the same files is refused; append=True continues.
    with pytest.raises(XpnetError, match="already exists"):
        _fit(_model(), 1, [CSVLogger(csv_path)])
    _fit(_model(), 1, [CSVLogger(csv_path, append=True)])
    assert len(csv_path.read_text().splitlines()) == 1 + 3 + 1


def test_issue18_logs_never_follow_links(tmp_path):
    target = tmp_path / "precious.txt"
    target.write_text("keep")
    link = tmp_path / "log.csv"
    link.symlink_to(target)
    for logger in (CSVLogger(link), CSVLogger(link, append=True)):
        with pytest.raises(XpnetError, match="symbolic link"):
            _fit(_model(), 1, [logger])
    assert target.read_text() == "keep"


def test_issue18_tensorboard_event_files_read_by_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import (
        EventAccumulator,
    )

    history = _fit(_model(), 3, [TensorBoard(tmp_path / "tb")])
    train = EventAccumulator(str(tmp_path / "tb" / "train"))
    train.Reload()
    losses = train.Scalars("epoch_loss")
    assert [e.step for e in losses] == [1, 2, 3]
    np.testing.assert_allclose([e.value for e in losses], history["loss"], rtol=1e-6)
    rates = [e.value for e in train.Scalars("epoch_learning_rate")]
    np.testing.assert_allclose(rates, history["lr"], rtol=1e-6)
    val = EventAccumulator(str(tmp_path / "tb" / "validation"))
    val.Reload()
    np.testing.assert_allclose(
        [e.value for e in val.Scalars("epoch_loss")], history["val_loss"], rtol=1e-6
    )


def test_issue18_tensorboard_imports_without_the_package():
    code = (
        "import sys; sys.modules['tensorboard'] = None;"
        "from xpnet.callbacks import TensorBoard; t = TensorBoard('x');"
        "import numpy as np, xpnet; m = xpnet.mlp([3, 2]);"
        "m.fit(np.zeros((4, 3)), np.array([0, 1, 0, 1]), callbacks=[t])"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 1
    assert "pip install 'xpnet[tensorboard]'" in run.stderr


def test_issue18_early_stopping_on_every_backend(backend):
    """Best weights kept on the device and put back, on every namespace
    (array-api-strict on a non-default device included)."""
    stopper = EarlyStopping(monitor="loss", patience=1, restore_best_weights=True)
    model = _model(lr=0.5, backend=backend)
    history = _fit(model, 6, [stopper], validation=False)
    twin = _model(lr=0.5, backend=backend)
    _fit(twin, stopper.best_epoch, validation=False)
    if history.stop_reason == "early_stopping":
        np.testing.assert_allclose(_flat(model), _flat(twin), rtol=0, atol=1e-12)
    state = stopper.state()
    again = EarlyStopping(monitor="loss", patience=1, restore_best_weights=True)
    again.load_state(state)
    again.set_model(model)
    again.restore_best()
    if stopper.best_weights is not None:
        np.testing.assert_array_equal(_flat(model), state["best_weights"])


def test_item15_a_reused_logger_refuses_another_models_run(tmp_path):
    """Review item 15: one logger instance in a second fit of another model
    used to add that run's rows to the first run's file without a word."""
    for logger_class, name in ((CSVLogger, "log.csv"), (JSONLinesLogger, "log.jsonl")):
        path = tmp_path / name
        logger = logger_class(path)
        _fit(_model(), 2, [logger])
        before = path.read_text()
        with pytest.raises(XpnetError, match="already holds an earlier fit of another"):
            _fit(_model(), 1, [logger])
        assert path.read_text() == before


def test_item15_a_reused_logger_continues_one_models_training(tmp_path):
    """Fitting one model on (a loop of fits, partial_fit) keeps one log; a
    rewound model is refused; append=True adds whatever run it is given."""
    path = tmp_path / "log.csv"
    logger, model = CSVLogger(path), _model()
    _fit(model, 2, [logger])
    _fit(model, 1, [logger])
    rows = list(csv.DictReader(path.open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    model.epochs_trained = 1
    with pytest.raises(XpnetError, match="starts again at epoch 2"):
        _fit(model, 1, [logger])
    explicit = CSVLogger(path, append=True)
    _fit(_model(), 1, [explicit])
    _fit(_model(), 1, [explicit])
    assert len(list(csv.DictReader(path.open()))) == 3 + 2


# ------------------------------------------------------------------ misuse


def test_item18_model_checkpoint_template_checked_when_made(tmp_path):
    """Review item 18: an unknown field in a ModelCheckpoint name used to be
    a KeyError after the first epoch's training; now one line at once."""
    for name, said in (
        ("mc_{foo}.npz", "names {foo}, which training does not record"),
        ("mc_{}.npz", "names {}"),
        ("mc_{epoch:zz}.npz", "cannot be filled in"),
        ("mc_{.npz", "not a valid name template"),
    ):
        with pytest.raises(XpnetError, match=re.escape(said)):
            ModelCheckpoint(tmp_path / name)
    assert list(tmp_path.iterdir()) == []
    # Known fields and literal braces still work; a validation value in a
    # fit without validation is refused before the first epoch.
    model = _model()
    _fit(model, 1, [ModelCheckpoint(tmp_path / "m{{x}}-{epoch:02d}-{loss:.2f}.npz")])
    assert [p.name[:8] for p in tmp_path.glob("*.npz")] == ["m{x}-01-"]
    with pytest.raises(XpnetError, match="has no validation data"):
        _fit(_model(), 1, [ModelCheckpoint(tmp_path / "v{val_loss}.npz")], False)
    assert _model().epochs_trained == 0


def test_item18_fit_refuses_malformed_validation_data_in_one_line():
    X, y = _data()
    model = _model()
    for given, said in (((X,), "a tuple of 1"), (X, "a ndarray"), ([X, y, y], "of 3")):
        with pytest.raises(XpnetError, match="validation_data must be a pair") as e:
            model.fit(X, y, 1, BATCH, validation_data=given)
        assert said in str(e.value)
    assert model.epochs_trained == 0
    model.fit(X, y, 1, BATCH, validation_data=[*_validation()])
    assert model.epochs_trained == 1


def test_item18_fit_takes_one_callback_and_refuses_non_callbacks():
    X, y = _data()
    stopper = EarlyStopping("loss", patience=0, min_delta=10.0)
    history = _model().fit(X, y, 5, BATCH, callbacks=stopper)
    assert history.stop_reason == "early_stopping" and len(history["loss"]) == 2
    model = _model()
    for given, said in (
        ("log.csv", "callbacks must be a list of xpnet callbacks, got str"),
        (42, "got int"),
        ([EarlyStopping], "e.g. EarlyStopping()"),
        ([print], "got builtin_function_or_method"),
    ):
        with pytest.raises(XpnetError, match=re.escape(said)):
            model.fit(X, y, 1, BATCH, callbacks=given)
    assert model.epochs_trained == 0


def test_item15_a_used_logger_pickles_as_a_new_logger_of_its_file(tmp_path):
    """A used logger (e.g. in a pickled estimator's callbacks) pickles; the
    copy does not know the run and refuses the existing file like a new one."""
    import pickle

    path = tmp_path / "log.csv"
    logger = CSVLogger(path)
    _fit(_model(), 1, [logger])
    again = pickle.loads(pickle.dumps(logger))
    with pytest.raises(XpnetError, match="already exists"):
        _fit(again.model, 1, [again])
