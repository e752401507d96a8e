"""Issue 18 on the command line: --early-stopping, --save-best, --schedule
with --warmup-epochs, --log, --tensorboard, --adam-betas, the done: line's
reason and --json's stop_reason/best_epoch, exact resume mid-patience."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from xpnet import cli
from xpnet.checkpoint import Checkpoint, read_checkpoint


@pytest.fixture()
def data(tmp_path: Path) -> Path:
    """A small learnable bring-your-own dataset that overfits quickly."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 8))
    y = (X[:, 0] + 0.8 * rng.normal(size=200) > 0).astype(np.int64)
    path = tmp_path / "data.npz"
    np.savez(path, x_train=X[:150], y_train=y[:150], x_test=X[150:], y_test=y[150:])
    return path


def train(data: Path, *options: str, capsys) -> tuple[int, str, str]:
    code = cli.main(
        [
            "train",
            "--dataset",
            str(data),
            "--device",
            "cpu",
            "--hidden",
            "32",
            "--batch-size",
            "16",
            "--dtype",
            "float64",
            *options,
        ]
    )
    out, err = capsys.readouterr()
    return code, out, err


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def params(path: Path) -> dict[str, np.ndarray]:
    return Checkpoint.from_file(path).model.state_dict()


def test_issue18_early_stopping_and_save_best_need_a_validation_split(data, capsys):
    for option in (("--early-stopping", "3"), ("--save-best", "b.npz")):
        code, _, err = train(data, *option, capsys=capsys)
        assert code == 2
        assert f"{option[0]} watches the validation loss: add --validation-split" in err
        assert len(err.strip().splitlines()) == 1


def test_issue18_early_stop_reports_the_best_epoch_restored(data, tmp_path, capsys):
    save, best = tmp_path / "run.npz", tmp_path / "best.npz"
    code, out, _ = train(
        data,
        "--epochs",
        "40",
        "--lr",
        "0.3",
        "--validation-split",
        "0.2",
        "--early-stopping",
        "2",
        "--save",
        str(save),
        "--save-best",
        str(best),
        "--json",
        capsys=capsys,
    )
    assert code == 0
    report = last_json(out)
    assert report["stop_reason"] == "early_stopping"
    rows = report["history"]
    losses = [r["val_loss"] for r in rows]
    best_epoch = 1 + int(np.argmin(losses))
    assert report["best_epoch"] == best_epoch
    # Keras's rule: stopped 2 epochs after the best, none of them better.
    assert len(rows) == best_epoch + 2
    assert (
        "early stopping: no better validation loss in 2 epochs; "
        f"best epoch {best_epoch}" in out
    )
    # The final line reports the restored best epoch's test accuracy.
    assert f"test accuracy {100 * rows[best_epoch - 1]['test_accuracy']:.2f}%" in out
    # --save holds the last epoch, --save-best the best one, bit for bit the
    # weights of a run that stops there.
    assert read_checkpoint(save)[0]["epochs_trained"] == len(rows)
    assert read_checkpoint(best)[0]["epochs_trained"] == best_epoch
    twin = tmp_path / "twin.npz"
    code, _, _ = train(
        data,
        "--epochs",
        str(best_epoch),
        "--lr",
        "0.3",
        "--validation-split",
        "0.2",
        "--save",
        str(twin),
        "--quiet",
        capsys=capsys,
    )
    assert code == 0
    mine, theirs = params(best), params(twin)
    for key in mine:
        np.testing.assert_array_equal(mine[key], theirs[key])


@pytest.mark.parametrize(
    "schedule",
    [
        ("--schedule", "plateau", "--plateau-patience", "1", "--plateau-factor", "0.5"),
        ("--schedule", "cosine", "--warmup-epochs", "3", "--min-lr", "0.01"),
    ],
    ids=["plateau", "warmup-cosine"],
)
def test_issue18_resume_mid_patience_is_bit_identical(
    data, tmp_path, capsys, monkeypatch, schedule
):
    """Stopped by Ctrl-C after epoch 4 is saved (inside the warm-up, or after
    a plateau cut, with early stopping counting) and resumed: the same bits,
    history and stop as one uninterrupted run."""
    from xpnet.cli import epochs

    common = (
        "--epochs",
        "12",
        "--lr",
        "0.3",
        "--validation-split",
        "0.2",
        "--early-stopping",
        "4",
        *schedule,
        "--json",
        "--quiet",
    )
    whole, part = tmp_path / "whole.npz", tmp_path / "part.npz"
    code, out, _ = train(data, "--save", str(whole), *common, capsys=capsys)
    assert code == 0
    one = last_json(out)
    line = epochs.EpochLine.on_epoch_end

    def ctrl_c_after_epoch_4(self, epoch, logs):
        line(self, epoch, logs)
        if epoch == 4:
            raise KeyboardInterrupt

    monkeypatch.setattr(epochs.EpochLine, "on_epoch_end", ctrl_c_after_epoch_4)
    code, _, err = train(data, "--save", str(part), *common, capsys=capsys)
    assert code == 1 and "holds epoch 4" in err
    monkeypatch.undo()
    code, out, _ = train(data, "--resume", str(part), *common, capsys=capsys)
    assert code == 0
    two = last_json(out)
    assert two["stop_reason"] == one["stop_reason"]
    assert two["best_epoch"] == one["best_epoch"]
    assert [r["val_loss"] for r in one["history"][4:]] == [
        r["val_loss"] for r in two["history"]
    ]
    assert [r["lr"] for r in one["history"][4:]] == [r["lr"] for r in two["history"]]
    a, b = params(whole), params(part)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


def test_issue18_schedules_in_epochs_by_hand(data, tmp_path, capsys):
    """150 rows less 20% held out = 120, batch 16: 8 updates per epoch."""
    code, out, _ = train(
        data,
        "--epochs",
        "6",
        "--lr",
        "0.2",
        "--validation-split",
        "0.2",
        "--schedule",
        "step",
        "--step-epochs",
        "2",
        "--step-gamma",
        "0.5",
        "--warmup-epochs",
        "1",
        "--json",
        "--quiet",
        capsys=capsys,
    )
    assert code == 0
    rates = [r["lr"] for r in last_json(out)["history"]]
    # Epoch 1: the warm-up's first update; then the step schedule from its
    # own step 0, halved every 2 epochs.
    assert rates == [0.2 / 8, 0.2, 0.2, 0.1, 0.1, 0.05]
    code, out, _ = train(
        data,
        "--epochs",
        "3",
        "--lr",
        "0.2",
        "--schedule",
        "exponential",
        "--decay-rate",
        "0.5",
        "--json",
        "--quiet",
        capsys=capsys,
    )
    # No split: 150 rows, 10 updates per epoch; x0.5 per epoch.
    assert [r["lr"] for r in last_json(out)["history"]] == [0.2, 0.1, 0.05]


def test_issue18_wrong_schedule_parameters_are_one_line(data, capsys):
    code, _, err = train(data, "--step-epochs", "3", capsys=capsys)
    assert code == 2
    assert "--step-epochs is not a parameter of --schedule constant" in err
    code, _, err = train(
        data, "--schedule", "cosine", "--lr-decay", "0.1", capsys=capsys
    )
    assert code == 2 and "--lr-decay is not a parameter of --schedule cosine" in err
    code, _, err = train(data, "--adam-betas", "0.9,0.99", capsys=capsys)
    assert code == 2 and "--adam-betas is for --optimizer adam or adamw" in err
    code, _, err = train(data, "--log", "run.txt", capsys=capsys)
    assert code == 2 and "must end in .csv or .jsonl" in err
    code, _, err = train(data, "--warmup-epochs", "3", "--epochs", "3", capsys=capsys)
    assert code == 2 and "--warmup-epochs 3 leaves nothing of --epochs 3" in err
    code, _, err = train(
        data,
        "--save",
        "same.npz",
        "--save-best",
        "same.npz",
        "--validation-split",
        "0.2",
        capsys=capsys,
    )
    assert code == 2 and "is --save's file" in err


def test_issue18_adam_betas_are_used_and_recorded(data, tmp_path, capsys):
    save = tmp_path / "adam.npz"
    code, _, _ = train(
        data,
        "--optimizer",
        "adam",
        "--adam-betas",
        "0.8,0.95",
        "--epochs",
        "1",
        "--save",
        str(save),
        "--quiet",
        capsys=capsys,
    )
    assert code == 0
    meta = read_checkpoint(save)[0]
    assert meta["optimizer"]["config"]["beta1"] == 0.8
    assert meta["optimizer"]["config"]["beta2"] == 0.95
    assert meta["train_options"]["adam_betas"] == [0.8, 0.95]
    code, _, err = train(
        data,
        "--resume",
        str(save),
        "--epochs",
        "2",
        "--adam-betas",
        "0.9,0.999",
        capsys=capsys,
    )
    assert code == 2 and "contradicts checkpoint" in err


def test_issue18_logs_one_row_per_epoch_and_resume_appends(data, tmp_path, capsys):
    log, save = tmp_path / "run.csv", tmp_path / "run.npz"
    jsonl = tmp_path / "run.jsonl"
    code, _, _ = train(
        data,
        "--epochs",
        "2",
        "--save",
        str(save),
        "--log",
        str(log),
        "--quiet",
        capsys=capsys,
    )
    assert code == 0
    code, _, _ = train(
        data,
        "--epochs",
        "3",
        "--resume",
        str(save),
        "--log",
        str(log),
        "--quiet",
        capsys=capsys,
    )
    assert code == 0
    rows = list(csv.DictReader(log.open()))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert {"loss", "accuracy", "test_accuracy", "lr"} <= set(rows[0])
    # A new run does not write into someone's existing log.
    code, _, err = train(data, "--epochs", "1", "--log", str(log), capsys=capsys)
    assert code == 2 and "already exists" in err
    code, _, _ = train(
        data, "--epochs", "2", "--log", str(jsonl), "--quiet", capsys=capsys
    )
    lines = [json.loads(x) for x in jsonl.read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [1, 2]


def test_issue18_tensorboard_event_files(data, tmp_path, capsys):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import (
        EventAccumulator,
    )

    code, out, _ = train(
        data,
        "--epochs",
        "2",
        "--tensorboard",
        str(tmp_path / "tb"),
        "--json",
        "--quiet",
        capsys=capsys,
    )
    assert code == 0
    events = EventAccumulator(str(tmp_path / "tb" / "train"))
    events.Reload()
    losses = [e.value for e in events.Scalars("epoch_loss")]
    expected = [r["loss"] for r in last_json(out)["history"]]
    np.testing.assert_allclose(losses, expected, rtol=1e-6)


def test_issue18_done_line_says_the_epochs_were_reached(data, capsys):
    code, out, _ = train(data, "--epochs", "1", "--json", "--quiet", capsys=capsys)
    assert code == 0
    assert "done: 1 epoch in " in out and "(--epochs 1 reached)" in out
    report = last_json(out)
    assert report["stop_reason"] == "epochs" and report["best_epoch"] is None


def test_issue18_one_definition_of_the_training_options():
    """The parser's flags, the resume rules and the checkpoint validation all
    come from the one table: every recorded option has a flag, a group and
    saved types."""
    from xpnet.cli import build_parser
    from xpnet.cli.options import TRAIN_OPTION_TABLE, saved_types
    from xpnet.cli.resume import TRAIN_OPTIONS

    train = build_parser().commands["train"]
    dests = {action.dest for action in train._actions}
    assert set(TRAIN_OPTIONS) <= dests
    assert TRAIN_OPTIONS == tuple(o.name for o in TRAIN_OPTION_TABLE)
    assert set(saved_types()) == set(TRAIN_OPTIONS)


def test_issue18_bad_recorded_control_is_refused(data, tmp_path, capsys):
    save = tmp_path / "run.npz"
    code, _, _ = train(
        data, "--epochs", "1", "--save", str(save), "--quiet", capsys=capsys
    )
    assert code == 0
    with np.load(save) as archive:
        arrays = dict(archive)
    meta = json.loads(arrays["meta"].tobytes())
    meta["train_options"]["early_stopping"] = "soon"
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(save, **arrays)
    code, _, err = train(data, "--resume", str(save), "--epochs", "2", capsys=capsys)
    assert code == 2 and "train_options.early_stopping is 'soon'" in err


def test_issue18_old_checkpoint_keeps_its_schedule(data, tmp_path, capsys):
    """A checkpoint from before --schedule: --lr-decay chose the schedule, and
    a resumed run that asks for another is refused like any continued option."""
    save = tmp_path / "old.npz"
    code, _, _ = train(
        data,
        "--epochs",
        "1",
        "--lr-decay",
        "0.01",
        "--save",
        str(save),
        "--quiet",
        capsys=capsys,
    )
    assert code == 0
    with np.load(save) as archive:
        arrays = dict(archive)
    meta = json.loads(arrays["meta"].tobytes())
    for key in ("schedule", "warmup_epochs", "early_stopping", "adam_betas"):
        del meta["train_options"][key]
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(save, **arrays)
    code, _, err = train(
        data,
        "--resume",
        str(save),
        "--epochs",
        "2",
        "--schedule",
        "cosine",
        capsys=capsys,
    )
    assert code == 2
    assert "--schedule cosine contradicts checkpoint" in err
    assert "(--schedule inverse-time)" in err
    code, _, _ = train(
        data, "--resume", str(save), "--epochs", "2", "--quiet", capsys=capsys
    )
    assert code == 0


def test_issue18_tensorboard_refusals_come_before_any_work(data, tmp_path, capsys):
    taken = tmp_path / "notes.txt"
    taken.write_text("mine")
    code, out, err = train(
        data,
        "--tensorboard",
        str(taken),
        "--save",
        str(tmp_path / "run.npz"),
        capsys=capsys,
    )
    assert code == 2 and "is not a directory" in err and out == ""
    assert not (tmp_path / "run.npz").exists()
