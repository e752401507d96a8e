"""Pictures: ``xpnet plot``, ``xpnet train --plot``, ``xpnet evaluate --plot``
(issue 12, section 3) and the drawing in :mod:`xpnet.figures`.

The commands run in-process (``xpnet.cli.main``) so that faults can be
injected and matplotlib hidden; pixels are not compared, but what is drawn is
(axes, labels, lines)."""

from __future__ import annotations

import builtins
import math

import numpy as np
import pytest

import xpnet
from xpnet import cli, figures
from xpnet.checkpoint import save_checkpoint
from xpnet.cli import epochs as cli_epochs
from xpnet.cli import plot as cli_plot
from xpnet.cli import train as cli_train

pytest.importorskip("matplotlib")

SMALL = ("--dataset", "mnist-sample", "--device", "cpu", "--hidden", "16",
         "--batch-size", "500", "--quiet")  # fmt: skip
HISTORY = [
    {"epoch": 1, "loss": 0.6, "train_accuracy": 0.82, "test_loss": 0.32,
     "test_accuracy": 0.90, "seconds": 0.4},
    {"epoch": 2, "loss": 0.2, "train_accuracy": 0.93, "test_loss": 0.25,
     "test_accuracy": 0.92, "seconds": 0.4},
]  # fmt: skip


def lines_of(ax) -> dict[str, list[float]]:
    return {line.get_label(): list(line.get_ydata()) for line in ax.get_lines()}


def error_of(capsys) -> str:
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1, err
    return err[0]


def hide_matplotlib(monkeypatch) -> None:
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)


# ------------------------------------------------------------------ the figures


def test_curves_have_units_legends_integer_epochs_and_percent():
    fig = figures.curves_figure(HISTORY, title="run.npz: 784-16-10", loss="mse")
    loss_ax, acc_ax = fig.axes
    assert loss_ax.get_xlabel() == acc_ax.get_xlabel() == "epoch"
    assert loss_ax.get_ylabel() == "loss (MSE)"
    assert acc_ax.get_ylabel() == "accuracy (%)"
    assert lines_of(loss_ax) == {"train": [0.6, 0.2], "test": [0.32, 0.25]}
    # accuracy in percent, the last value in the legend
    acc = lines_of(acc_ax)
    assert acc["train (93.00%)"] == pytest.approx([82.0, 93.0])
    assert acc["test (92.00%)"] == pytest.approx([90.0, 92.0])
    assert loss_ax.get_legend() is not None and acc_ax.get_legend() is not None
    fig.canvas.draw()
    ticks = [t for t in loss_ax.get_xticks() if 1 <= t <= 2]
    assert ticks and all(float(t).is_integer() for t in ticks)
    assert fig.get_suptitle() == "run.npz: 784-16-10"


def test_curves_include_validation_and_survive_junk_values():
    history = [
        {**HISTORY[0], "val_loss": 0.4, "val_accuracy": 0.88},
        {**HISTORY[1], "val_loss": "oops", "test_accuracy": None, "epoch": None},
    ]
    fig = figures.curves_figure(history, title="t", loss="cross-entropy")
    loss = lines_of(fig.axes[0])
    assert set(loss) == {"train", "validation", "test"}
    assert loss["validation"][0] == 0.4 and math.isnan(loss["validation"][1])
    assert list(fig.axes[0].get_lines()[0].get_xdata()) == [1, 2]


def test_a_regressor_gets_the_loss_panel_only():
    history = [{"epoch": 1, "loss": 3.0, "train_accuracy": None, "test_loss": 2.0}]
    fig = figures.curves_figure(history, title="t", loss="mse")
    assert len(fig.axes) == 1 and fig.axes[0].get_ylabel() == "loss (MSE)"


def test_confusion_matrix_counts_rows_true_columns_predicted():
    counts = figures.confusion_matrix(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 1]), 3)
    assert counts.tolist() == [[1, 1, 0], [0, 1, 0], [0, 1, 0]]
    with pytest.raises(figures.PlotError, match=r"labels must lie in \[0, 3\)"):
        figures.confusion_matrix(np.array([0]), np.array([3]), 3)


def test_confusion_figure_labels_both_axes_and_states_accuracy():
    counts = np.array([[8, 2], [1, 9]])
    fig = figures.confusion_figure(counts, ["T-shirt/top", "Trouser"], title="m")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["T-shirt/top", "Trouser"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["T-shirt/top", "Trouser"]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("predicted class", "true class")
    assert "accuracy 85.00% (17 of 20 correct)" in ax.get_title()
    assert sorted(t.get_text() for t in ax.texts) == ["1", "2", "8", "9"]
    # colour is the row share: 9 of 10 and 8 of 10, not the raw counts
    assert ax.images[0].get_array()[1, 1] == pytest.approx(90.0)


# ---------------------------------------------------------------- output paths


def test_output_path_rules(tmp_path):
    with pytest.raises(figures.PlotError, match="cannot write '.npz' files"):
        figures.check_output(tmp_path / "run.npz", "-o", overwrite=True)
    with pytest.raises(figures.PlotError, match="without a suffix"):
        figures.check_output(tmp_path / "curves", "-o", overwrite=False)
    with pytest.raises(figures.PlotError, match="is a directory"):
        figures.check_output(tmp_path, "-o", overwrite=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(figures.PlotError, match="is a file, not a directory"):
        figures.check_output(tmp_path / "file" / "c.png", "-o", overwrite=False)
    theirs = tmp_path / "theirs.png"
    theirs.write_bytes(b"not ours")
    with pytest.raises(figures.PlotError, match="already exists: replace it with"):
        figures.check_output(theirs, "--plot", overwrite=False, marker="curves x")
    assert figures.check_output(theirs, "--plot", overwrite=True) == theirs
    # A picture drawn for the same checkpoint is ours; for another one it is not.
    mine = tmp_path / "mine.png"
    marker = figures.marker_of("curves", tmp_path / "run.npz")
    figures.save_figure(figures.curves_figure(HISTORY, title="t"), mine, marker)
    assert figures.check_output(mine, "-o", overwrite=False, marker=marker) == mine
    other = figures.marker_of("confusion", tmp_path / "run.npz")
    with pytest.raises(figures.PlotError, match="already exists"):
        figures.check_output(mine, "-o", overwrite=False, marker=other)


def test_save_figure_is_atomic_and_one_line_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "c.png"
    figures.save_figure(figures.curves_figure(HISTORY, title="t"), path)
    before = path.read_bytes()
    assert before.startswith(b"\x89PNG")

    def broken(*args, **kwargs):
        raise RuntimeError("renderer exploded\nsecond line")

    fig = figures.curves_figure(HISTORY, title="t")
    monkeypatch.setattr(fig, "savefig", broken)
    with pytest.raises(figures.PlotError) as info:
        figures.save_figure(fig, path)
    assert str(info.value) == f"cannot write {str(path)!r}: renderer exploded"
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.png"]  # no temp file left


# ---------------------------------------------------------------- the commands


def test_plot_command_redraws_its_own_picture_and_refuses_others(tmp_path, capsys):
    run = tmp_path / "run.npz"
    assert cli.main(["train", *SMALL, "--epochs", "2", "--save", str(run)]) == 0
    out = tmp_path / "curves.svg"
    assert cli.main(["plot", str(run), "-o", str(out)]) == 0
    assert out.read_text().lstrip().startswith("<?xml")
    png = tmp_path / "run.png"  # the default: the checkpoint's name
    capsys.readouterr()
    assert cli.main(["plot", str(run)]) == 0
    assert capsys.readouterr().out == f"{png}: 2 epochs of {run}\n"
    assert cli.main(["plot", str(run)]) == 0  # ours: redrawn
    assert cli.main(["plot", str(run), "-o", str(out)]) == 0  # an SVG: ours too
    out.write_text("<svg xmlns='http://www.w3.org/2000/svg'/>\n")  # someone's
    assert cli.main(["plot", str(run), "-o", str(out)]) == 2
    assert "already exists" in error_of(capsys)
    assert cli.main(["plot", str(run), "-o", str(out), "--overwrite"]) == 0
    assert cli.main(["plot", str(run), "-o", str(tmp_path / "c.txt")]) == 2
    assert error_of(capsys).endswith("end the name in .png, .svg or .pdf")


def test_plot_of_a_checkpoint_without_epochs_is_one_line(tmp_path, capsys):
    run = tmp_path / "run.npz"
    save_checkpoint(run, xpnet.mlp([4, 3, 2], device="cpu"))  # epoch 0
    assert cli.main(["plot", str(run)]) == 2
    assert "holds no finished epoch yet: nothing to plot" in error_of(capsys)
    assert not (tmp_path / "run.png").exists()


def test_item19_plot_draws_a_library_checkpoint(tmp_path, capsys):
    """Review item 19: a checkpoint written by xpnet.save (or ModelCheckpoint)
    from a library model trained one epoch said "holds no finished epoch
    yet": the model now keeps its epochs' history and saves it."""
    from xpnet.callbacks import ModelCheckpoint

    rng = np.random.default_rng(0)
    X = rng.random((40, 4)).astype(np.float32)
    y = (X[:, 0] > 0.5).astype(np.int64)
    model = xpnet.mlp([4, 3, 2], device="cpu")
    every = tmp_path / "every-{epoch}.npz"
    model.fit(X, y, 1, 8, validation_data=(X, y), callbacks=[ModelCheckpoint(every)])
    lib = tmp_path / "lib.npz"
    xpnet.save(lib, model, preprocessing="none")
    for path in (lib, tmp_path / "every-1.npz"):
        capsys.readouterr()
        assert cli.main(["plot", str(path), "-o", str(tmp_path / "c.png")]) == 0
        assert capsys.readouterr().out.endswith(f": 1 epoch of {path}\n")
        (tmp_path / "c.png").unlink()
    # Loaded, trained on and saved again: the history goes on.
    again = xpnet.load(lib)
    again.fit(X, y, 1, 8)
    assert [row["epoch"] for row in again.epoch_history] == [1, 2]
    assert again.epoch_history[0]["val_loss"] == model.epoch_history[0]["val_loss"]
    xpnet.save(lib, again, overwrite=True)
    assert cli.main(["plot", str(lib), "-o", str(tmp_path / "c.png")]) == 0
    assert capsys.readouterr().out.endswith(f": 2 epochs of {lib}\n")
    # A trained model's file without a history (as older xpnet wrote them)
    # says so instead of "no finished epoch".
    old = tmp_path / "old.npz"
    again.epoch_history = []
    save_checkpoint(old, again)
    assert cli.main(["plot", str(old)]) == 2
    assert "holds 2 trained epochs but no record of their loss" in error_of(capsys)


def test_train_plot_is_written_at_the_end_and_rerunning_resumes_it(tmp_path):
    run, png = tmp_path / "run.npz", tmp_path / "c.png"
    argv = ["train", *SMALL, "--save", str(run), "--plot", str(png)]
    assert cli.main([*argv, "--epochs", "1", "--resume-if-exists"]) == 0
    first = png.read_bytes()
    # the same command, resumed: the picture is the run's own, so it is redrawn
    assert cli.main([*argv, "--epochs", "2", "--resume-if-exists"]) == 0
    assert png.read_bytes() != first
    assert png.stat().st_size > 10_000


def test_train_plot_is_checked_before_training(tmp_path, capsys, monkeypatch):
    taken = tmp_path / "taken.png"
    taken.write_bytes(b"someone's picture")
    code = cli.main(["train", *SMALL, "--epochs", "1", "--plot", str(taken)])
    assert code == 2 and "already exists" in error_of(capsys)
    assert taken.read_bytes() == b"someone's picture"
    hide_matplotlib(monkeypatch)
    loaded = []
    monkeypatch.setattr(cli_train, "load_training_data", loaded.append)
    code = cli.main(["train", *SMALL, "--plot", str(tmp_path / "c.png")])
    assert code == 2 and loaded == []
    assert error_of(capsys) == (
        "xpnet: error: --plot needs matplotlib, which is not installed: "
        "pip install 'xpnet[plot]'"
    )


def test_plot_command_without_matplotlib_says_how_to_install(
    tmp_path, capsys, monkeypatch
):
    hide_matplotlib(monkeypatch)
    assert cli.main(["plot", str(tmp_path / "run.npz")]) == 2
    assert error_of(capsys).endswith("pip install 'xpnet[plot]'")


def test_train_plot_is_drawn_when_the_run_is_stopped(tmp_path, capsys, monkeypatch):
    png = tmp_path / "c.png"
    real = cli_epochs.epoch_line  # the epoch lines' callback prints it

    def stop_in_epoch_2(record, total):
        if record["epoch"] == 2:
            raise KeyboardInterrupt
        return real(record, total)

    monkeypatch.setattr(cli_epochs, "epoch_line", stop_in_epoch_2)
    assert cli.main(["train", *SMALL, "--epochs", "2", "--plot", str(png)]) == 1
    assert png.read_bytes().startswith(b"\x89PNG")
    # Diverging in the first epoch: nothing to draw, and it says so.
    png2 = tmp_path / "d.png"
    capsys.readouterr()
    argv = ["train", *SMALL, "--epochs", "2", "--lr", "1e6", "--plot", str(png2)]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert f"xpnet: no epoch finished: {png2} not drawn" in err
    assert "training diverged in epoch 1" in err
    assert not png2.exists()


def test_train_plot_redraws_between_epochs_at_most_every_plot_every_s(
    tmp_path, monkeypatch
):
    drawn: list[int] = []
    monkeypatch.setattr(
        cli_plot, "draw_curves", lambda path, history, **kw: drawn.append(len(history))
    )
    png = tmp_path / "c.png"
    assert cli.main(["train", *SMALL, "--epochs", "2", "--plot", str(png)]) == 0
    assert drawn == [2]  # PLOT_EVERY_S (30 s) never passed: the end only
    drawn.clear()
    monkeypatch.setattr(cli_plot, "PLOT_EVERY_S", 0.0)
    assert cli.main(["train", *SMALL, "--epochs", "2", "--plot", str(png)]) == 0
    assert drawn == [1, 2]


def test_evaluate_plot_draws_the_confusion_matrix(tmp_path, capsys):
    run, png = tmp_path / "run.npz", tmp_path / "confusion.png"
    assert cli.main(["train", *SMALL, "--epochs", "1", "--save", str(run)]) == 0
    capsys.readouterr()
    argv = ["evaluate", str(run), "--device", "cpu", "--plot", str(png)]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == f"plotted {png}"
    assert png.read_bytes().startswith(b"\x89PNG")
    assert cli.main(argv) == 0  # ours: redrawn
    # the curves of the same checkpoint are not the confusion matrix's file
    assert cli.main(["plot", str(run), "-o", str(png)]) == 2
    assert "already exists" in error_of(capsys)
