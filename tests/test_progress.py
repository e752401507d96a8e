"""Progress while fitting (xpnet.progress, fit's ``verbose``), the validation
split (``fit(validation_split=F)``, ``xpnet train --validation-split``), and
the command line's help texts and notices."""

from __future__ import annotations

import argparse
import io
import json

import numpy as np
import pytest

import xpnet
from xpnet import backend as backend_module
from xpnet import cli
from xpnet import epoch as epoch_module
from xpnet.checkpoint import read_checkpoint
from xpnet.progress import Progress
from xpnet.rng import validation_split

SMALL = ("--dataset", "mnist-sample", "--hidden", "16", "--epochs", "1")


def _model(seed=2):
    return xpnet.mlp([6, 8, 3], device="cpu", dtype="float64", seed=seed)


def _data(n=40, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 6)), rng.integers(0, 3, size=n)


class FakeClock:
    """Each call returns one second more than the last (from 0)."""

    def __init__(self, step: float = 1.0) -> None:
        self.now, self.step = -step, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


class Recorder(Progress):
    def __init__(self, **kwargs) -> None:
        super().__init__(bar=True, bar_file=io.StringIO(), **kwargs)
        self.shown: list[tuple[int, float, float | None]] = []

    def show(self, samples_done, loss, accuracy) -> None:
        self.shown.append((samples_done, loss, accuracy))
        super().show(samples_done, loss, accuracy)


def _count_reads(model) -> list[int]:
    """Count the model's device reads (fit reads only through read_floats)."""
    reads = [0]
    read = model.read_floats

    def counted(*scalars):
        reads[0] += 1
        return read(*scalars)

    model.read_floats = counted
    return reads


# -- the bar: one device read per refresh, none between --------------------------
@pytest.mark.parametrize("interval,refreshes", [(3.0, 6), (1000.0, 0)])
def test_bar_reads_the_device_once_per_refresh_and_never_between(interval, refreshes):
    model = _model()
    reads = _count_reads(model)
    # 40 rows in batches of 4: 10 steps; the clock moves 1 s per look, so a
    # refresh falls on steps 3, 6 and 9 of each epoch (none with 1000 s).
    progress = Recorder(clock=FakeClock(), interval=interval)
    model.fit(*_data(), epochs=2, batch_size=4, progress=progress)
    assert [s for s, *_ in progress.shown] == [12, 24, 36] * (refreshes // 3)
    assert progress.refreshes == refreshes
    # One read per refresh, the epoch's own read and, once per fit, the
    # divergence guard's reference (batches under 256 rows): 20 steps add nothing.
    assert reads[0] == refreshes + 2 + 1


@pytest.mark.parametrize("in_place", [True, False])
def test_running_loss_and_accuracy_end_at_the_epochs(monkeypatch, in_place):
    if not in_place:  # the path of namespaces without item assignment (JAX)
        monkeypatch.setattr(
            epoch_module.array_api_compat, "is_writeable_array", lambda x: False
        )
    progress = Recorder(clock=FakeClock(), interval=1.0)  # every step
    history = _model().fit(*_data(), epochs=1, batch_size=8, progress=progress)
    record = history.records[0]
    assert [s for s, *_ in progress.shown] == [8, 16, 24, 32, 40]
    _, loss, accuracy = progress.shown[-1]
    assert loss == pytest.approx(record["loss"], rel=1e-9)
    assert accuracy == pytest.approx(record["accuracy"])


def test_bar_shows_the_epoch_of_the_total_and_the_running_metrics():
    model = _model()
    model.fit(*_data(), epochs=1, batch_size=4)  # a resumed model: epoch 2 next
    progress = Recorder(clock=FakeClock(), interval=1.0)
    model.fit(*_data(), epochs=2, batch_size=4, progress=progress)
    text = progress.bar_file.getvalue()
    assert "epoch 2/3" in text and "epoch 3/3" in text
    assert "loss " in text and "acc " in text and "sample/s" in text


def test_a_bar_off_the_terminal_is_never_due_so_reads_nothing():
    model = _model()
    reads = _count_reads(model)
    progress = Progress(bar="auto", bar_file=io.StringIO(), clock=FakeClock())
    model.fit(*_data(), epochs=1, batch_size=4, progress=progress)
    assert progress.refreshes == 0 and reads[0] == 1 + 1  # + the guard's reference


# -- verbose, as in Keras ------------------------------------------------------------
def test_verbose_0_is_silent_and_2_prints_a_line_per_epoch(capsys):
    X, y = _data()
    _model().fit(X, y, epochs=2, batch_size=8)
    assert capsys.readouterr() == ("", "")
    _model().fit(X, y, epochs=2, batch_size=8, verbose=2, validation_data=(X, y))
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert err == "" and len(lines) == 2
    assert lines[1].startswith("epoch   2/2  loss ")
    assert "train acc" in lines[1] and "val acc" in lines[1]


def test_verbose_1_off_a_terminal_prints_the_lines_without_a_bar(capsys):
    _model().fit(*_data(), epochs=2, batch_size=8, verbose=1)
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 2 and err == ""


@pytest.mark.parametrize("verbose", [3, -1, True, "1"])
def test_verbose_out_of_range_is_one_line(verbose):
    with pytest.raises(xpnet.XpnetError, match="verbose must be 0, 1 or 2"):
        _model().fit(*_data(), verbose=verbose)


# -- the validation split ------------------------------------------------------------
def test_split_is_stratified_seeded_and_partitions_the_rows():
    labels = np.repeat([0, 1, 2], [50, 30, 20])
    train, val = validation_split(0, 100, 0.2, labels)
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(100))
    assert np.bincount(labels[val]).tolist() == [10, 6, 4]
    again = validation_split(0, 100, 0.2, labels)
    assert all(np.array_equal(a, b) for a, b in zip((train, val), again, strict=True))
    assert not np.array_equal(validation_split(1, 100, 0.2, labels)[1], val)
    # Without labels (regression): uniformly random, the same size.
    assert validation_split(0, 100, 0.2)[1].size == 20


@pytest.mark.parametrize("fraction", [0, 1, 1.5, -0.1, True, "0.2"])
def test_split_fraction_out_of_range_is_one_line(fraction):
    with pytest.raises(xpnet.XpnetError, match="validation_split must be a fraction"):
        _model().fit(*_data(), validation_split=fraction)


def test_split_leaving_no_row_on_a_side_is_one_line():
    with pytest.raises(xpnet.XpnetError, match="both need at least one"):
        _model().fit(*_data(n=3), validation_split=0.1)


def test_fit_trains_on_the_rest_and_validates_on_the_held_out_rows():
    X, y = _data(n=40)
    model = _model()
    seen: list[int] = []
    history = model.fit(
        X, y, epochs=1, batch_size=4, validation_split=0.25, on_batch=seen.append
    )
    train, val = validation_split(model.seed, 40, 0.25, y)
    assert seen[-1] == train.size and 8 <= val.size <= 12
    expected = model.evaluate(X[val], y[val])
    record = history.records[0]
    assert record["val_loss"] == pytest.approx(expected["loss"])
    assert record["val_accuracy"] == expected["accuracy"]


def test_split_and_validation_data_together_is_one_line():
    X, y = _data()
    with pytest.raises(xpnet.XpnetError, match="both validation_data and valid"):
        _model().fit(X, y, validation_data=(X, y), validation_split=0.2)


def test_cli_never_gives_the_test_set_to_fit(monkeypatch, tmp_path, capsys):
    calls = []
    fit = xpnet.Sequential.fit

    def spy(self, *args, **kwargs):
        calls.append(kwargs)
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(xpnet.Sequential, "fit", spy)
    argv = ["train", *SMALL, "--device", "cpu", "--quiet", "--json"]
    assert cli.main([*argv, "--validation-split", "0.2"]) == 0
    assert cli.main(argv) == 0
    assert calls[0].get("validation_data") is None
    assert calls[0]["validation_split"] == 0.2
    assert calls[1].get("validation_data") is None
    history = json.loads(capsys.readouterr().out.splitlines()[-1])["history"]
    assert history[0]["test_accuracy"] > 0.5 and "val_accuracy" not in history[0]


def test_cli_split_is_recorded_and_kept_on_resume(tmp_path, capsys):
    path = str(tmp_path / "v.npz")
    base = ["train", *SMALL[:-2], "--device", "cpu", "--save", path, "--quiet"]
    assert cli.main([*base, "--epochs", "1", "--validation-split", "0.1"]) == 0
    meta, _ = read_checkpoint(path)
    assert meta["train_options"]["validation_split"] == 0.1
    row = meta["history"][0]
    assert 0 < row["val_accuracy"] <= 1 and 0 < row["test_accuracy"] <= 1
    # Resumed without the option: the same split (the seed's), still validated.
    assert cli.main([*base[:-3], "--resume", path, "--epochs", "2", "--quiet"]) == 0
    assert "val_accuracy" in read_checkpoint(path)[0]["history"][1]
    capsys.readouterr()
    code = cli.main(
        [*base[:-3], "--resume", path, "--epochs", "3", "--validation-split", "0.3"]
    )
    assert code == 2
    assert "--validation-split 0.3 contradicts checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["0", "1", "x", "-0.5"])
def test_cli_split_out_of_range_is_one_line(bad, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--validation-split", bad])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "expected a fraction between 0 and 1" in err and len(err.splitlines()) == 1


# -- the command line's habits ----------------------------------------------------
def test_no_arguments_prints_the_help_and_exits_0(capsys):
    assert cli.main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: xpnet") and "train" in out and "predict" in out


def _actions(parser: argparse.ArgumentParser, path: str):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                yield f"{path} {choice.dest}", choice
            for name, sub in action.choices.items():
                yield from _actions(sub, f"{path} {name}")
        else:
            yield f"{path} {'/'.join(action.option_strings) or action.dest}", action


def test_every_command_positional_and_option_has_a_help_text():
    missing = [
        where
        for where, action in _actions(cli.build_parser(), "xpnet")
        if not action.help or action.help == argparse.SUPPRESS
    ]
    assert missing == []


@pytest.fixture
def fresh_notices(monkeypatch):
    """No CuPy, and no auto-device notice logged yet in this process."""
    monkeypatch.setitem(__import__("sys").modules, "cupy", None)
    monkeypatch.setattr(backend_module, "_logged_notices", set())


def test_library_logs_the_auto_notice_once_per_process(fresh_notices, caplog):
    with caplog.at_level("WARNING", logger="xpnet"):
        for _ in range(3):
            xpnet.mlp([4, 3])
    notices = [r.getMessage() for r in caplog.records]
    assert len(notices) == 1 and notices[0].startswith("device auto: CuPy is not")


@pytest.mark.parametrize("typed", [True, False])
def test_cli_shows_the_auto_notice_only_when_asked(fresh_notices, capsys, typed):
    device = ["--device", "auto"] if typed else []
    assert cli.main(["train", *SMALL, "--quiet", *device]) == 0
    err = capsys.readouterr().err
    assert ("xpnet: device auto: CuPy is not installed" in err) == typed
