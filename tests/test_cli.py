"""The ``xpnet`` console script, run for real in subprocesses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import xpnet
from xpnet.checkpoint import load_checkpoint, read_checkpoint
from xpnet.cli.main import main

SCRIPT = Path(sys.executable).with_name("xpnet")
TRAIN_SAMPLE_ON_CPU = (
    str(SCRIPT),
    "train",
    "--dataset",
    "mnist-sample",
    "--device",
    "cpu",
)


def run(
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = 120,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess:
    if not SCRIPT.exists():
        pytest.fail(f"console script {SCRIPT} missing: pip install -e . first")
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        [str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        cwd=cwd,
    )


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    lines = [
        ln for ln in proc.stderr.splitlines() if not ln.startswith("xpnet: device auto")
    ]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def test_version_and_module_entry_point():
    assert run("--version").stdout.strip() == f"xpnet {xpnet.__version__}"
    proc = subprocess.run(
        [sys.executable, "-m", "xpnet", "--help"], capture_output=True, text=True
    )
    assert proc.returncode == 0 and "train" in proc.stdout and "bench" in proc.stdout


@pytest.mark.slow
def test_default_training_on_the_bundled_sample_reaches_93_percent(tmp_path):
    proc = run("train", "--dataset", "mnist-sample", "--device", "cpu", "--json")
    assert proc.returncode == 0, proc.stderr
    result = last_json(proc.stdout)
    history = result["history"]
    assert len(history) == 10
    for row in history:
        assert set(row) >= {
            "epoch",
            "loss",
            "train_accuracy",
            "test_accuracy",
            "seconds",
            "samples_per_second",
        }
    assert result["device"] == {"backend": "numpy", "device": "cpu", "gpu": None}
    assert result["config"]["hidden"] == [256]
    assert history[-1]["test_accuracy"] >= 0.93
    # Human-readable lines come before the JSON: settings first, then epochs.
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f"xpnet {xpnet.__version__} | backend=numpy")
    assert sum(ln.startswith("epoch ") for ln in lines) == 10
    assert "samples/s" in lines[3]


def _train(tmp_path, *extra: str) -> subprocess.CompletedProcess:
    return run(
        "train",
        "--dataset",
        "mnist-sample",
        "--device",
        "cpu",
        "--hidden",
        "16",
        "--batch-size",
        "256",
        "--quiet",
        *extra,
        cwd=tmp_path,
    )


def test_resume_continues_exactly(tmp_path):
    common = ("--dtype", "float64", "--optimizer", "adam", "--lr", "0.003")
    assert (
        _train(tmp_path, *common, "--epochs", "4", "--save", "straight.npz").returncode
        == 0
    )
    assert (
        _train(tmp_path, *common, "--epochs", "2", "--save", "half.npz").returncode == 0
    )
    proc = _train(
        tmp_path,
        "--resume",
        "half.npz",
        "--epochs",
        "4",  # the total, as Keras' epochs with initial_epoch
        "--save",
        "resumed.npz",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    assert [row["epoch"] for row in last_json(proc.stdout)["history"]] == [3, 4]
    meta_a, a = read_checkpoint(tmp_path / "straight.npz")
    meta_b, b = read_checkpoint(tmp_path / "resumed.npz")
    assert meta_a["epochs_trained"] == meta_b["epochs_trained"] == 4
    assert sorted(a) == sorted(b)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert meta_a["rng_state"] == meta_b["rng_state"]
    assert len(meta_b["history"]) == 4
    assert not list(tmp_path.glob(".*.tmp"))


def test_checkpoint_metadata_and_cross_backend_load(tmp_path):
    assert (
        _train(tmp_path, "--epochs", "1", "--deskew", "--save", "m.npz").returncode == 0
    )
    meta, arrays = read_checkpoint(tmp_path / "m.npz")
    assert meta["xpnet_version"] == xpnet.__version__
    assert meta["architecture"]["dtype"] == "float32"
    assert meta["optimizer"]["name"] == "sgd" and meta["optimizer"]["iterations"] > 0
    assert meta["preprocessing"] == {
        "deskew": True,
        "scale": 255.0,
        "standardize": False,
        "known": True,
    }
    assert json.loads((tmp_path / "m.npz.json").read_text())["epochs_trained"] == 1
    with np.load(tmp_path / "m.npz", allow_pickle=False) as archive:
        assert "param/0.W" in archive.files and "opt/slot0.velocity" in archive.files
    # Saved from NumPy, loaded on another backend (as a GPU checkpoint on a CPU).
    model, _ = load_checkpoint(tmp_path / "m.npz", "cpu", "array-api-strict")
    np.testing.assert_array_equal(model.state_dict()["0.W"], arrays["param/0.W"])


def test_evaluate_and_predict(tmp_path):
    proc = _train(tmp_path, "--epochs", "3", "--save", "m.npz", "--json")
    trained_acc = last_json(proc.stdout)["history"][-1]["test_accuracy"]
    proc = run("evaluate", "m.npz", "--device", "cpu", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert last_json(proc.stdout)["accuracy"] == pytest.approx(trained_acc, abs=1e-9)
    human = run("evaluate", "m.npz", "--device", "cpu", cwd=tmp_path)
    assert f"accuracy {100 * trained_acc:.2f}%" in human.stdout

    proc = run("predict", "m.npz", "mnist-sample:0", "--device", "cpu", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("mnist-sample:0: looks like a 7, p=")
    assert "(true label: 7)" in proc.stdout

    from xpnet.datasets import load_dataset

    test = load_dataset("mnist-sample")
    np.save(tmp_path / "digits.npy", test.x_test[:3].reshape(3, 28, 28))
    proc = run(
        "predict", "m.npz", "digits.npy", "--device", "cpu", "--json", cwd=tmp_path
    )
    results = last_json(proc.stdout)["results"]
    model, _ = load_checkpoint(tmp_path / "m.npz", "cpu")
    expected = model.predict(test.x_test[:3] / np.float32(255))
    assert [r["prediction"] for r in results] == expected.tolist()
    assert all(abs(sum(r["probabilities"]) - 1) < 1e-4 for r in results)


def test_predict_reads_an_image_file(tmp_path):
    image_module = pytest.importorskip("PIL.Image", reason="Pillow not installed")
    from xpnet.datasets import load_dataset

    assert _train(tmp_path, "--epochs", "3", "--save", "m.npz").returncode == 0
    test = load_dataset("mnist-sample")
    # Dark ink on a light page, 3x larger: predict must invert and resize it.
    digit = 255 - test.x_test[0].reshape(28, 28)
    image_module.fromarray(digit).resize((84, 84)).save(tmp_path / "seven.png")
    proc = run("predict", "m.npz", "seven.png", "--device", "cpu", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "looks like a 7" in proc.stdout


def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    proc = subprocess.Popen(
        [
            *TRAIN_SAMPLE_ON_CPU,
            "--hidden",
            "64",
            "--epochs",
            "500",
            "--save",
            "run.npz",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        for line in proc.stdout:
            if line.startswith("epoch   2/"):
                break
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 1
    assert "Traceback" not in err
    assert "interrupted in epoch" in err and "--resume run.npz" in err
    meta, _ = read_checkpoint(tmp_path / "run.npz")
    assert meta["epochs_trained"] >= 1
    assert f"run.npz holds epoch {meta['epochs_trained']} " in err
    assert len(meta["history"]) == meta["epochs_trained"]
    assert not list(tmp_path.glob(".*.tmp"))


def test_diverging_run_stops_with_advice(tmp_path):
    proc = _train(
        tmp_path,
        "--loss",
        "mse",
        "--activation",
        "tanh",
        "--lr",
        "1e4",
        "--epochs",
        "3",
    )
    assert proc.returncode == 1
    assert "diverged" in one_line_error(proc)
    assert "lower the learning rate" in proc.stderr


def test_loss_far_above_the_start_stops_the_run_and_keeps_the_last_good_save(
    tmp_path,
):
    proc = _train(tmp_path, "--lr", "100", "--epochs", "3", "--save", "run.npz")
    assert proc.returncode == 1
    line = one_line_error(proc)
    assert "training diverged in epoch 1: the loss" in line
    assert "lower the learning rate (now 100)" in line
    model, meta = load_checkpoint(tmp_path / "run.npz", "cpu")
    assert meta["epochs_trained"] == 0
    assert all(np.isfinite(v).all() for v in model.state_dict().values())


def test_bce_trains_a_ten_class_model(tmp_path):
    proc = _train(tmp_path, "--loss", "bce", "--lr", "1", "--epochs", "2", "--json")
    assert proc.returncode == 0, proc.stderr
    last = last_json(proc.stdout)["history"][-1]
    assert last["loss"] > 0 and last["test_loss"] > 0
    assert last["test_accuracy"] > 0.6


@pytest.mark.parametrize(
    "args,message",
    [
        (["train", "--dataset", "nope"], "unknown dataset 'nope': choose one of mnist"),
        (["train", "--device", "tpu"], "unknown device 'tpu'"),
        (
            ["train", "--backend", "numpy", "--device", "cuda"],
            "backend 'numpy' cannot run on 'cuda:0'",
        ),
        (["evaluate", "missing.npz"], "checkpoint 'missing.npz' does not exist"),
        (
            ["predict", "missing.npz", "x.png"],
            "checkpoint 'missing.npz' does not exist",
        ),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, args, message):
    proc = run(*args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert message in one_line_error(proc)


def test_unknown_choice_lists_valid_ones():
    proc = run("train", "--optimizer", "rmsprop")
    assert proc.returncode == 2
    assert (
        "invalid choice: 'rmsprop' (choose from 'sgd', 'adam', 'adamw')" in proc.stderr
    )


@pytest.mark.skipif(
    importlib_util_spec := __import__("importlib.util").util.find_spec("cupy")
    is not None,
    reason="CuPy is installed",
)
def test_cuda_without_cupy_names_the_extra():
    proc = run("train", "--device", "cuda", "--dataset", "mnist-sample")
    assert proc.returncode == 2
    assert "pip install 'xpnet[cuda12]'" in one_line_error(proc)


def _offline(tmp_path: Path) -> dict[str, str]:
    """An empty cache and a mirror where nothing listens (port 9): offline."""
    return {
        "XPNET_DATA": str(tmp_path / "cache"),
        "XPNET_MIRRORS": "http://127.0.0.1:9/",
    }


def test_explicit_mnist_offline_without_cache_points_to_the_sample(tmp_path):
    proc = run("train", "--dataset", "mnist", "--epochs", "1", env=_offline(tmp_path))
    assert proc.returncode == 2
    line = one_line_error(proc)
    assert str(tmp_path / "cache" / "mnist") in line
    assert "--dataset mnist-sample" in line


def test_train_with_no_options_offline_uses_the_sample_and_records_it(tmp_path):
    """Issue 12.4: `xpnet train` on a fresh offline machine trains on the
    bundled sample, says so in one line, and records it, so that --resume and
    evaluate use the same data."""
    proc = run(
        "train", "--epochs", "1", "--hidden", "8", "--save", "d.npz",
        env=_offline(tmp_path), cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    notices = [ln for ln in proc.stderr.splitlines() if "dataset:" in ln]
    assert len(notices) == 1, proc.stderr
    assert notices[0].startswith("xpnet: dataset: MNIST is not cached in ")
    assert "training on the bundled mnist-sample" in notices[0]
    assert "data: mnist-sample (bundled mnist-sample)" in proc.stdout
    assert "done: 1 epoch" in proc.stdout
    meta, _ = read_checkpoint(tmp_path / "d.npz")
    assert meta["train_options"]["dataset"] == "mnist-sample"
    assert meta["dataset"]["name"] == "mnist-sample"


def test_corrupt_or_mismatched_checkpoint(tmp_path):
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 not really a zip")
    proc = run("evaluate", "bad.npz", "--device", "cpu", cwd=tmp_path)
    assert proc.returncode == 2
    assert "is corrupt or not an xpnet .npz file" in one_line_error(proc)

    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "small.npz",
        x_train=rng.random((60, 20)),
        y_train=rng.integers(0, 3, 60),
        x_test=rng.random((30, 20)),
        y_test=rng.integers(0, 3, 30),
    )
    assert (
        run(
            "train",
            "--dataset",
            "small.npz",
            "--device",
            "cpu",
            "--epochs",
            "1",
            "--save",
            "small-model.npz",
            "--quiet",
            cwd=tmp_path,
        ).returncode
        == 0
    )
    proc = run(
        "evaluate",
        "small-model.npz",
        "--dataset",
        "mnist-sample",
        "--device",
        "cpu",
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "expects 20 features but dataset 'mnist-sample' has 784" in one_line_error(
        proc
    )


def test_info_reports_backends():
    proc = run("info", "--json")
    assert proc.returncode == 0, proc.stderr
    facts = last_json(proc.stdout)
    assert facts["backends"]["numpy"] == np.__version__
    expected = xpnet.resolve("auto")
    assert facts["auto_device"]["device"] == expected.device_name
    assert facts["auto_device"]["backend"] == expected.name
    human = run("info")
    assert "array-api-compat" in human.stdout and "--device auto ->" in human.stdout


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_progress_bar_shows_on_a_terminal(tmp_path):
    import fcntl
    import pty
    import struct
    import termios

    main, secondary = pty.openpty()
    # A new pty is 0 columns wide, where tqdm draws an empty bar: make it 100.
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen(
        [
            *TRAIN_SAMPLE_ON_CPU,
            "--hidden",
            "16",
            "--epochs",
            "2",
            "--batch-size",
            "32",
        ],
        stdout=subprocess.PIPE,
        stderr=secondary,
        text=True,
        cwd=tmp_path,
    )
    os.close(secondary)
    chunks: list[bytes] = []

    def drain() -> None:  # read while it runs: a closed pty drops unread output
        while True:
            try:
                data = os.read(main, 65536)
            except OSError:
                return
            if not data:
                return
            chunks.append(data)

    import threading

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    out, _ = proc.communicate(timeout=120)
    reader.join(timeout=10)
    os.close(main)
    bar = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0
    assert "epoch 1/2:" in bar and "epoch 2/2:" in bar and "/5.00k" in bar
    assert "sample/s" in bar
    assert sum(ln.startswith("epoch ") for ln in out.splitlines()) == 2


def test_evaluate_and_predict_mnist_need_only_the_test_files(
    tmp_path, monkeypatch, capsys
):
    """Issue 12.5: a cache holding only MNIST's two t10k files (which the
    bundled sample shares) is enough to evaluate on and predict from."""
    from xpnet import cli

    shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
    if not shared.is_dir():
        pytest.skip(f"shared MNIST files not found at {shared}")
    cache = tmp_path / "cache" / "mnist"
    cache.mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (cache / name).write_bytes((shared / name).read_bytes())
    for key, value in _offline(tmp_path).items():
        monkeypatch.setenv(key, value)
    model = str(tmp_path / "m.npz")
    tiny = ["--device", "cpu", "--hidden", "8", "--epochs", "1", "--quiet"]
    assert cli.main(["train", "--dataset", "mnist-sample", *tiny, "--save", model]) == 0
    capsys.readouterr()
    evaluate = ["evaluate", model, "--dataset", "mnist", "--device", "cpu", "--json"]
    assert cli.main(evaluate) == 0
    assert last_json(capsys.readouterr().out)["samples"] == 10_000
    assert cli.main(["predict", model, "mnist:7", "--device", "cpu", "--json"]) == 0
    (result,) = last_json(capsys.readouterr().out)["results"]
    assert result["true_label"] == 9  # the eighth test digit is a 9
    # Training needs the training files, and says which are missing.
    assert cli.main(["train", "--dataset", "mnist", *tiny]) == 2
    assert "could not download mnist file train-images" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "hint"),
    [
        (["--epochs", "1", "train"], "xpnet train --epochs"),
        (["--quiet"], "xpnet COMMAND"),
    ],
)
def test_an_option_before_the_command_says_where_it_goes(capsys, argv, hint):
    # argparse used to say "invalid choice: '1'" for xpnet --epochs 1 train
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "goes after the command" in err, err
    assert hint in err
