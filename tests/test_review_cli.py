"""The new-user review's command-line findings (items 5, 6, 12, 16, 17, 20):
regressor checkpoints with bring-your-own float targets, a run that ends
worse than it started, a stop after the last epoch, ``--data-dir`` given a
file, options that do nothing, and Ctrl-C while the program starts. The
real CLI through :func:`xpnet.cli.main` or a ``python -m xpnet`` subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import xpnet
from xpnet.cli import main
from xpnet.cli.parser import build_parser
from xpnet.datasets import DatasetError, load_npz

SRC = Path(__file__).resolve().parents[1] / "src"
LIMIT = 120
# --blas-threads: no busy-CPU hint line on a shared machine
QUICK = ["--dataset", "mnist-sample", "--hidden", "8", "--device", "cpu"]
QUICK += ["--blas-threads", "1"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(SRC), env.get("PYTHONPATH")) if p
    )
    env.pop("XPNET_DEBUG", None)
    return env


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# -- item 5: a regressor checkpoint with bring-your-own float targets -----------------
@pytest.fixture(scope="module")
def regression(tmp_path_factory) -> tuple[Path, Path]:
    """``(checkpoint of a library regressor, .npz dataset with float targets)``."""
    folder = tmp_path_factory.mktemp("regression")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5)).astype(np.float32)
    y = (x @ rng.normal(size=5)).astype(np.float32)
    data = folder / "regdata.npz"
    np.savez(data, x_train=x[:150], y_train=y[:150], x_test=x[150:], y_test=y[150:])
    model = xpnet.mlp([5, 8, 1], loss="mse", device="cpu", seed=0)
    model.fit(x[:150], y[:150], epochs=1)
    checkpoint = folder / "reg.npz"
    xpnet.save(checkpoint, model, preprocessing="none")
    return checkpoint, data


def test_review5_regressor_checkpoint_evaluates_on_float_targets(regression, capsys):
    checkpoint, data = regression
    assert main(["evaluate", str(checkpoint), "--dataset", str(data)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("regdata test set: loss ") and "accuracy" not in out


def test_review5_regressor_checkpoint_resumes_on_float_targets(
    regression, tmp_path, capsys
):
    checkpoint, data = regression
    run = tmp_path / "run.npz"
    run.write_bytes(checkpoint.read_bytes())
    argv = ["train", "--resume", str(run), "--dataset", str(data), "--epochs", "3"]
    assert main([*argv, "--blas-threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "float targets (1 output)" in out and "done: 2 epochs" in out
    assert xpnet.load(run, "cpu").epochs_trained == 3


def test_review5_resuming_a_library_checkpoint_needs_its_dataset_named(
    regression, tmp_path, capsys
):
    checkpoint, _ = regression
    run = tmp_path / "run.npz"
    run.write_bytes(checkpoint.read_bytes())
    assert main(["train", "--resume", str(run), "--epochs", "3"]) == 2
    assert "does not name the dataset it was trained on" in _error_line(capsys)


def test_review5_float_targets_load_for_a_regressor_only(regression):
    _, data = regression
    assert load_npz(data, targets="values").y_train.dtype == np.float32
    with pytest.raises(DatasetError, match="expected integer class labels"):
        load_npz(data)


# -- item 6: a run that ends worse than it started ------------------------------------
WARNING = "xpnet: warning: the training loss ended at"


def test_review6_a_diverging_run_warns(capsys):
    assert main(["train", *QUICK, "--epochs", "2", "--lr", "50"]) == 0
    err = capsys.readouterr().err
    assert WARNING in err and "the run diverged; try a smaller --lr" in err


def test_review6_the_warning_is_in_the_json_object_too(capsys):
    assert main(["train", *QUICK, "--epochs", "1", "--lr", "50", "--json"]) == 0
    report = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert report["warning"].startswith("the training loss ended at")


def test_review6_healthy_runs_do_not_warn(tmp_path, capsys):
    run = tmp_path / "run.npz"
    assert main(["train", *QUICK, "--epochs", "2", "--save", str(run)]) == 0
    # A resumed, already trained model starts low, and its epochs' mean loss
    # (taken during the updates) may exceed that start a little: no warning.
    argv = ["train", "--resume", str(run), "--epochs", "5", "--blas-threads", "1"]
    assert main(argv) == 0
    assert WARNING not in capsys.readouterr().err


def test_review6_a_resumed_run_wrecked_by_its_new_batch_size_warns(tmp_path, capsys):
    run = tmp_path / "run.npz"
    assert main(["train", *QUICK, "--epochs", "2", "--save", str(run)]) == 0
    # lr 0.1 with momentum 0.9 is too much for batches of 8: test accuracy
    # falls to about chance; the warning says so.
    argv = ["train", "--resume", str(run), "--epochs", "3", "--batch-size", "8"]
    assert main([*argv, "--blas-threads", "1"]) == 0
    assert WARNING in capsys.readouterr().err


@pytest.mark.parametrize(
    ("start", "final", "warns"),
    [(2.3, 73.7, True), (2.3, 2.4, False), (0.01, 0.05, False), (None, 9.0, False)],
)
def test_review6_the_rule_needs_twice_the_start_and_one_more(start, final, warns):
    from xpnet.cli.finish import worse_than_start

    assert worse_than_start(start, final) is warns


# -- item 12: a stop after the last epoch ---------------------------------------------
@pytest.mark.parametrize("lines_read", [0, 3])
def test_review12_broken_pipe_after_the_last_epoch_gives_no_resume_hint(
    tmp_path, lines_read
):
    """The reader leaves before the done: line (0 lines: ``--quiet``) or
    the last epoch's line (3: after the first line, data: and model:)."""
    save = tmp_path / "run.npz"
    quiet = ["--quiet"] if lines_read == 0 else []
    proc = subprocess.Popen(
        [sys.executable, "-m", "xpnet", "train", *QUICK, "--epochs", "1",
         "--save", str(save), *quiet],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    for _ in range(lines_read):
        proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(LIMIT) == 1, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "(broken pipe)" in lines[0]
    assert "run.npz holds epoch 1 (training had finished" in lines[0]
    assert "continue with" not in lines[0] and "epoch 2" not in lines[0]


# -- item 16: --data-dir given a file -------------------------------------------------
@pytest.mark.parametrize("command", [["train"], ["evaluate", "m.npz"]])
def test_review16_data_dir_that_is_a_file_is_refused(tmp_path, capsys, command):
    a_file = tmp_path / "base.npz"
    a_file.write_bytes(b"data")
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--data-dir", str(a_file)])
    assert exit_info.value.code == 2
    assert "is a file, not a folder: --data-dir names the folder" in _error_line(capsys)


# -- item 17: options that do nothing -------------------------------------------------
def test_review17_no_scale_on_float_features_is_refused(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x, y = rng.random((40, 4)).astype(np.float32), rng.integers(0, 2, 40)
    data = tmp_path / "floats.npz"
    np.savez(data, x_train=x, y_train=y, x_test=x, y_test=y)
    argv = ["train", "--dataset", str(data), "--hidden", "4", "--epochs", "1"]
    assert main([*argv, "--no-scale"]) == 2
    line = _error_line(capsys)
    assert "--no-scale keeps the features as they are" in line
    assert "float32" in line and "drop --no-scale" in line


def test_review17_overwrite_of_the_resumed_file_itself_is_refused(tmp_path, capsys):
    run = tmp_path / "r.npz"
    assert main(["train", *QUICK, "--epochs", "1", "--save", str(run)]) == 0
    capsys.readouterr()
    argv = ["train", "--resume", str(run), "--epochs", "2", "--overwrite"]
    assert main([*argv, "--save", str(tmp_path / "." / "r.npz")]) == 2
    assert "is the resumed checkpoint itself" in _error_line(capsys)
    assert xpnet.load(run, "cpu").epochs_trained == 1


def test_review17_device_gpu_is_documented_in_the_help():
    for command in ("train", "evaluate", "predict"):
        text = " ".join(build_parser().commands[command].format_help().split())
        assert "cuda (or gpu)" in text, command


# -- item 20: Ctrl-C while the program starts -----------------------------------------
#: a real SIGINT while ``xpnet.cli`` is being imported (the window
#: "interrupted while starting" is about), then the console script's entry
STARTING = textwrap.dedent(
    """
    import os, signal, sys

    class SigintOnImport:
        def find_spec(self, name, path=None, target=None):
            if name == "xpnet.cli":
                sys.meta_path.remove(self)
                os.kill(os.getpid(), signal.SIGINT)
            return None

    sys.meta_path.insert(0, SigintOnImport())
    from xpnet.__main__ import console
    sys.exit(console())
    """
)


def test_review20_interrupt_while_starting_is_one_line():
    run = subprocess.run(
        [sys.executable, "-c", STARTING, "train"],
        capture_output=True, text=True, timeout=LIMIT, env=_env(),
    )  # fmt: skip
    assert run.returncode == 1, run.stderr
    assert run.stderr == "xpnet: interrupted while starting\n"
