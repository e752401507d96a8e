"""``xpnet train``'s promises about files, resuming, signals and its output.

Each test here reproduces a defect a new user hit (issue "Trust", items 4 and
6-11, 14, 15): subprocess tests run the real console script; the rest call
``xpnet.cli.main`` in-process where a fault has to be injected.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from xpnet import cli, interrupts
from xpnet.checkpoint import read_checkpoint
from xpnet.cli.common import print_json
from xpnet.runlock import CheckpointLock

SCRIPT = Path(sys.executable).with_name("xpnet")
SMALL = ("--dataset", "mnist-sample", "--device", "cpu", "--hidden", "16", "--quiet")


def run(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, proc.stderr
    return proc


def error_line(proc: subprocess.CompletedProcess) -> str:
    lines = [
        ln
        for ln in proc.stderr.splitlines()
        if ln.strip() and not ln.startswith("xpnet: device auto:")
    ]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def strict_json(line: str) -> dict:
    def refuse(token: str):
        raise AssertionError(f"non-standard JSON token {token}")

    return json.loads(line, parse_constant=refuse)


def epochs_in(path: Path) -> int:
    return read_checkpoint(path)[0]["epochs_trained"]


@pytest.fixture()
def byo(tmp_path: Path) -> Path:
    """A small bring-your-own dataset file."""
    rng = np.random.default_rng(0)
    path = tmp_path / "mydata.npz"
    np.savez(
        path,
        x_train=rng.random((60, 8)),
        y_train=rng.integers(0, 3, 60),
        x_test=rng.random((20, 8)),
        y_test=rng.integers(0, 3, 20),
    )
    return path


# -- item 6: --save never destroys a file that is not the run's checkpoint ---------
def test_save_onto_the_training_data_is_refused_even_with_overwrite(tmp_path, byo):
    before = byo.read_bytes()
    for extra in ((), ("--overwrite",)):
        proc = run(
            "train",
            "--dataset",
            "mydata.npz",
            "--save",
            "mydata.npz",
            *extra,
            cwd=tmp_path,
        )
        assert proc.returncode == 2
        assert "is the training data file" in error_line(proc)
    assert byo.read_bytes() == before


def test_save_onto_an_existing_model_needs_overwrite(tmp_path):
    ok(run("train", *SMALL, "--epochs", "2", "--save", "m.npz", cwd=tmp_path))
    before = (tmp_path / "m.npz").read_bytes()
    proc = run("train", *SMALL, "--epochs", "1", "--save", "m.npz", cwd=tmp_path)
    assert proc.returncode == 2
    assert "already exists" in error_line(proc) and "--overwrite" in proc.stderr
    assert (tmp_path / "m.npz").read_bytes() == before
    proc = run(
        "train",
        *SMALL,
        "--epochs",
        "1",
        "--save",
        "m.npz",
        "--overwrite",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert epochs_in(tmp_path / "m.npz") == 1


# -- items 7 and 8: resuming saves to its checkpoint; --epochs is the total --------
def test_resume_keeps_saving_and_epochs_is_the_total(tmp_path):
    ok(run("train", *SMALL, "--epochs", "2", "--save", "r.npz", cwd=tmp_path))
    proc = run("train", "--resume", "r.npz", "--epochs", "3", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = strict_json(proc.stdout.splitlines()[-1])
    assert [row["epoch"] for row in result["history"]] == [3]
    assert epochs_in(tmp_path / "r.npz") == 3  # not thrown away
    assert len(read_checkpoint(tmp_path / "r.npz")[0]["history"]) == 3

    # Re-running the same command finishes nothing more: a notice, exit 0, JSON.
    before = (tmp_path / "r.npz").read_bytes()
    proc = run("train", "--resume", "r.npz", "--epochs", "3", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "already holds 3 epochs" in proc.stderr
    assert strict_json(proc.stdout.splitlines()[-1])["epochs_trained"] == 3
    assert (tmp_path / "r.npz").read_bytes() == before


def test_nothing_to_train_still_validates_the_checkpoint(tmp_path):
    ok(run("train", *SMALL, "--epochs", "1", "--save", "r.npz", cwd=tmp_path))
    with np.load(tmp_path / "r.npz", allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    arrays["param/0.W"] = arrays["param/0.W"][:, :3]  # no longer fits the model
    np.savez(tmp_path / "r.npz", **arrays)
    proc = run("train", "--resume", "r.npz", "--epochs", "1", cwd=tmp_path)
    assert proc.returncode == 2
    assert "r.npz" in error_line(proc)


def test_resume_if_exists_is_one_preemption_safe_command(tmp_path):
    command = ("train", *SMALL, "--epochs", "3", "--save", "p.npz")
    first = run(*command, "--resume-if-exists", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert epochs_in(tmp_path / "p.npz") == 3
    again = run(*command, "--resume-if-exists", cwd=tmp_path)
    assert again.returncode == 0 and "nothing to train" in again.stderr
    longer = run(
        "train",
        *SMALL,
        "--epochs",
        "4",
        "--save",
        "p.npz",
        "--resume-if-exists",
        cwd=tmp_path,
    )
    assert longer.returncode == 0, longer.stderr
    assert epochs_in(tmp_path / "p.npz") == 4
    proc = run("train", *SMALL, "--resume-if-exists", cwd=tmp_path)
    assert proc.returncode == 2 and "needs --save" in error_line(proc)


def test_a_second_process_on_the_same_checkpoint_is_refused(tmp_path):
    with CheckpointLock(tmp_path / "busy.npz"):
        proc = run("train", *SMALL, "--epochs", "1", "--save", "busy.npz", cwd=tmp_path)
    assert proc.returncode == 2
    assert f"in use by another xpnet process (pid {os.getpid()})" in error_line(proc)
    assert not (tmp_path / "busy.npz").exists()
    # Released: the next run goes ahead, and leaves no lock file behind.
    ok(run("train", *SMALL, "--epochs", "1", "--save", "busy.npz", cwd=tmp_path))
    assert epochs_in(tmp_path / "busy.npz") == 1
    assert not (tmp_path / "busy.npz.lock").exists()


# -- item 9: resume never silently ignores an option -------------------------------
def test_resume_refuses_contradicting_options_and_honours_the_batch_size(tmp_path):
    ok(run("train", *SMALL, "--epochs", "1", "--save", "o.npz", cwd=tmp_path))
    for option, value in (
        ("--hidden", "32"),
        ("--dataset", "fashion-mnist"),
        ("--dtype", "float64"),
        ("--lr", "0.5"),
        ("--seed", "3"),
    ):
        proc = run(
            "train", "--resume", "o.npz", "--epochs", "2", option, value, cwd=tmp_path
        )
        assert proc.returncode == 2, (option, proc.stderr)
        assert f"{option} {value} contradicts checkpoint" in error_line(proc)
    assert epochs_in(tmp_path / "o.npz") == 1
    # Equal values are fine; a new batch size is used and recorded.
    proc = run(
        "train",
        "--resume",
        "o.npz",
        "--epochs",
        "2",
        "--hidden",
        "16",
        "--dataset",
        "mnist-sample",
        "--batch-size",
        "128",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "batch size 64 -> 128" in proc.stderr
    meta, _ = read_checkpoint(tmp_path / "o.npz")
    assert meta["train_options"]["batch_size"] == 128


def test_a_byo_dataset_is_stored_resolved_so_resume_works_elsewhere(tmp_path, byo):
    ok(
        run(
            "train",
            "--dataset",
            "mydata.npz",
            "--hidden",
            "4",
            "--epochs",
            "1",
            "--save",
            "b.npz",
            "--quiet",
            cwd=tmp_path,
        )
    )
    meta, _ = read_checkpoint(tmp_path / "b.npz")
    assert meta["train_options"]["dataset"] == str(byo.resolve())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = run(
        "train",
        "--resume",
        str(tmp_path / "b.npz"),
        "--epochs",
        "2",
        "--dataset",
        str(byo),
        "--quiet",
        cwd=elsewhere,
    )
    assert proc.returncode == 0, proc.stderr
    assert epochs_in(tmp_path / "b.npz") == 2


# -- item 10: temp files of killed saves are cleaned up ------------------------------
def test_stale_temp_files_of_the_checkpoint_are_removed(tmp_path):
    ok(run("train", *SMALL, "--epochs", "1", "--save", "ck.npz", cwd=tmp_path))
    stale = [
        tmp_path / ".ck.npz.xpnet-tmp-x1y2ab_3.tmp",
        tmp_path / ".ck.npz.json.xpnet-tmp-abcdefgh.tmp",
    ]
    other = tmp_path / ".other.npz.xpnet-tmp-x1y2ab_3.tmp"
    for path in (*stale, other):
        path.write_bytes(b"\0" * 1000)
    proc = run("train", "--resume", "ck.npz", "--epochs", "1", cwd=tmp_path)
    assert proc.returncode == 0 and "nothing to train" in proc.stderr
    assert not any(p.exists() for p in stale)
    assert other.exists()  # not this checkpoint's: left alone


# -- item 11: SIGTERM and early Ctrl-C -------------------------------------------------
def _start(tmp_path: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [
            str(SCRIPT),
            "train",
            "--dataset",
            "mnist-sample",
            "--device",
            "cpu",
            "--hidden",
            "64",
            "--epochs",
            "500",
            *extra,
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def test_sigterm_stops_like_ctrl_c_and_names_the_saved_epoch(tmp_path):
    proc = _start(tmp_path, "--save", "run.npz")
    try:
        for line in proc.stdout:
            if line.startswith("epoch   2/"):
                break
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143
    assert "Traceback" not in err
    held = epochs_in(tmp_path / "run.npz")
    assert held >= 2
    assert (
        f"terminated (SIGTERM) in epoch {held + 1}; run.npz holds epoch {held}" in err
    )
    assert "--resume run.npz --epochs 500" in err
    assert not list(tmp_path.glob(".*.tmp"))


def _handles_sigterm(pid: int) -> bool:
    """Whether the process has installed its own SIGTERM handler (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signal.SIGTERM - 1) & 1)
    return False


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_ctrl_c_while_starting_is_one_line(tmp_path):
    proc = _start(tmp_path)
    deadline = time.monotonic() + 30
    # The first thing the console script does is install its handlers; the
    # array libraries are imported after that, so this lands during imports.
    while not _handles_sigterm(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "Traceback" not in err
    assert "interrupted" in err


def test_a_signal_during_a_save_waits_for_it(tmp_path):
    restore = interrupts.install()
    order = []
    try:
        with pytest.raises(KeyboardInterrupt):
            with interrupts.deferred():
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)  # the handler has run by now, and deferred
                order.append("save finished")
        order.append("interrupt raised")
    finally:
        restore()
    assert order == ["save finished", "interrupt raised"]


# -- item 14: bad save targets and full disks are one line, exit 2 -------------------
@pytest.mark.parametrize("kind", ["directory", "parent is a file", "not npz"])
def test_bad_save_targets(tmp_path, kind):
    (tmp_path / "adir.npz").mkdir()
    (tmp_path / "afile").write_text("x")
    target = {
        "directory": "adir.npz",
        "parent is a file": "afile/run.npz",
        "not npz": "run.pt",
    }[kind]
    proc = run("train", *SMALL, "--epochs", "1", "--save", target, cwd=tmp_path)
    assert proc.returncode == 2
    assert "--save" in error_line(proc)


def test_a_full_disk_says_which_epoch_the_file_still_holds(
    tmp_path, monkeypatch, capsys
):
    path = tmp_path / "full.npz"
    assert cli.main(["train", *SMALL, "--epochs", "2", "--save", str(path)]) == 0
    capsys.readouterr()
    real_savez = np.savez

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(np, "savez", disk_full)
    code = cli.main(["train", "--resume", str(path), "--epochs", "3", "--json"])
    monkeypatch.setattr(np, "savez", real_savez)
    out, err = capsys.readouterr()
    assert code == 2
    line = [ln for ln in err.splitlines() if ln.startswith("xpnet: error:")]
    assert len(line) == 1
    assert "No space left on device" in line[0]
    assert f"{path} holds epoch 2" in line[0]
    assert strict_json(out.splitlines()[-1])["exit_code"] == 2
    assert epochs_in(path) == 2
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize(
    "args,message",
    [
        (["train", "--seed", "-1"], "--seed: expected a whole number from 0 to 2**128"),
        (["train", "--optimizer", "rmsprop"], "invalid choice: 'rmsprop'"),
        (["train", "--epochs"], "expected one argument"),
        (["evaluate"], "the following arguments are required: MODEL"),
    ],
)
def test_usage_errors_are_one_line(tmp_path, args, message):
    proc = run(*args, cwd=tmp_path)
    assert proc.returncode == 2
    line = error_line(proc)
    assert message in line and "--help" in line


@pytest.mark.skipif(
    __import__("importlib.util").util.find_spec("cupy") is not None,
    reason="CuPy is installed here",
)
def test_an_explicit_cupy_backend_is_honoured_or_refused(tmp_path):
    proc = run("train", "--dataset", "mnist-sample", "--backend", "cupy", cwd=tmp_path)
    assert proc.returncode == 2
    assert "backend 'cupy' cannot run here: CuPy is not installed" in error_line(proc)


# -- items 4 and 15: divergence, strict JSON, --quiet -------------------------------
def test_divergence_keeps_the_last_finite_epoch_and_prints_json(tmp_path):
    proc = run(
        "train",
        "--dataset",
        "mnist-sample",
        "--device",
        "cpu",
        "--lr",
        "100",
        "--save",
        "d.npz",
        "--json",
        "--quiet",
        cwd=tmp_path,
    )
    assert proc.returncode == 1
    line = error_line(proc)
    assert "diverged" in line and "lower the learning rate" in line
    held = epochs_in(tmp_path / "d.npz")
    assert f"d.npz holds epoch {held}" in line
    result = strict_json(proc.stdout.splitlines()[-1])
    assert result["exit_code"] == 1 and "diverged" in result["error"]
    assert len(result["history"]) == held
    # What was kept is a sound model: evaluate reports a finite loss.
    proc = run("evaluate", "d.npz", "--device", "cpu", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert np.isfinite(strict_json(proc.stdout.splitlines()[-1])["loss"])


def test_quiet_still_prints_the_final_line(tmp_path):
    proc = run("train", *SMALL, "--epochs", "1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("done: 1 epoch in ")
    assert "test accuracy" in proc.stdout


def test_json_never_holds_nan_tokens(capsys):
    print_json({"loss": float("nan"), "rows": [float("inf"), 1.0]})
    assert strict_json(capsys.readouterr().out) == {"loss": None, "rows": [None, 1.0]}


# -- found by an independent review of the above ------------------------------------
def test_the_json_copy_beside_a_checkpoint_is_not_overwritten_either(tmp_path):
    (tmp_path / "side.npz.json").write_text('{"mine": 1}')
    proc = run("train", *SMALL, "--epochs", "1", "--save", "side.npz", cwd=tmp_path)
    assert proc.returncode == 2 and "side.npz.json' already exists" in error_line(proc)
    assert (tmp_path / "side.npz.json").read_text() == '{"mine": 1}'
    (tmp_path / "side.npz.json").unlink()
    (tmp_path / "side.npz.json").mkdir()
    proc = run("train", *SMALL, "--epochs", "1", "--save", "side.npz", cwd=tmp_path)
    assert proc.returncode == 2 and "is a directory" in error_line(proc)
    assert not (tmp_path / "side.npz").exists()


@pytest.mark.parametrize(
    "args,message",
    [
        (
            ["--save", "a.npz", "--resume-if-exists", "--overwrite"],
            "--resume-if-exists keeps --save's file and --overwrite replaces it",
        ),
        (["--save", ""], "--save needs a file name"),
        (["--resume", "u8.npy"], "--resume 'u8.npy': a checkpoint path must end in"),
        (["--frobnicate"], "unrecognized arguments: --frobnicate (see xpnet train"),
        (["--hidden", "100000000"], "parameters: with their gradients"),
    ],
)
def test_conflicts_and_impossible_requests_are_one_line(tmp_path, args, message):
    proc = run("train", *SMALL, "--epochs", "1", *args, "--json", cwd=tmp_path)
    assert proc.returncode == 2
    assert message in error_line(proc)
    assert strict_json(proc.stdout.splitlines()[-1])["exit_code"] == 2


def test_a_moved_dataset_asks_for_its_new_place(tmp_path, byo):
    ok(run("train", "--dataset", "mydata.npz", "--hidden", "4", "--epochs", "1",
           "--save", "m.npz", "--quiet", cwd=tmp_path))  # fmt: skip
    byo.rename(tmp_path / "moved.npz")
    proc = run("train", "--resume", "m.npz", "--epochs", "2", cwd=tmp_path)
    assert proc.returncode == 2
    assert "is gone: pass its new location with --dataset" in error_line(proc)
    proc = run("train", "--resume", "m.npz", "--epochs", "2", "--dataset",
               "moved.npz", "--quiet", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr


def test_nothing_to_train_needs_no_writable_place(tmp_path, monkeypatch, capsys):
    from xpnet import runlock

    path = tmp_path / "ro.npz"
    assert cli.main(["train", *SMALL, "--epochs", "1", "--save", str(path)]) == 0

    def read_only(self):
        raise runlock.LockError("cannot create the lock file (read-only)", busy=False)

    monkeypatch.setattr(runlock.CheckpointLock, "acquire", read_only)
    assert cli.main(["train", "--resume", str(path), "--epochs", "1"]) == 0
    capsys.readouterr()
    assert cli.main(["train", "--resume", str(path), "--epochs", "2"]) == 2
    err = capsys.readouterr().err
    assert "read-only" in err and f"{path} holds epoch 1" in err


def test_an_interrupt_before_the_first_epoch_still_prints_json(
    tmp_path, monkeypatch, capsys
):
    from xpnet.cli import common

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(common, "load_training_data", interrupted)
    monkeypatch.setattr("xpnet.cli.train.load_training_data", interrupted)
    code = cli.main(["train", *SMALL, "--save", str(tmp_path / "i.npz"), "--json"])
    out, err = capsys.readouterr()
    assert code == 1
    assert err.strip().splitlines() == [
        f"xpnet: interrupted; {tmp_path / 'i.npz'} was not written"
    ]
    assert strict_json(out.splitlines()[-1])["exit_code"] == 1


# -- issue 12.4: the default dataset offline, recorded, and kept by --resume -------
def test_resume_keeps_the_dataset_the_default_chose(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XPNET_DATA", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("XPNET_MIRRORS", "http://127.0.0.1:9/")  # nothing listens
    path = str(tmp_path / "d.npz")
    tiny = ("--device", "cpu", "--hidden", "8", "--quiet")
    assert cli.main(["train", *tiny, "--epochs", "1", "--save", path]) == 0
    assert "training on the bundled mnist-sample" in capsys.readouterr().err
    assert read_checkpoint(path)[0]["train_options"]["dataset"] == "mnist-sample"
    # Resumed: the recorded dataset, no new choice and no notice.
    assert cli.main(["train", "--resume", path, "--epochs", "2", "--quiet"]) == 0
    assert "dataset:" not in capsys.readouterr().err
    assert epochs_in(Path(path)) == 2
    # Naming another dataset is refused in one line.
    refused = ["--epochs", "3", "--dataset", "mnist", "--device", "cpu"]
    code = cli.main(["train", "--resume", path, *refused])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert "--dataset mnist contradicts checkpoint" in err
    assert "(--dataset mnist-sample)" in err


# -- issue 12.5: train on your own IDX files -----------------------------------------
@pytest.fixture()
def idx_files(tmp_path: Path) -> list[Path]:
    """Train and test IDX files of 8-pixel samples in 3 classes."""
    from xpnet.idx import write_idx

    rng = np.random.default_rng(0)
    arrays = (
        rng.integers(0, 256, (60, 2, 4), dtype=np.uint8),
        rng.integers(0, 3, 60).astype(np.uint8),
        rng.integers(0, 256, (20, 2, 4), dtype=np.uint8),
        rng.integers(0, 3, 20).astype(np.uint8),
    )
    paths = [tmp_path / n for n in ("x.idx", "y.idx", "tx.idx.gz", "ty.idx.gz")]
    for path, array in zip(paths, arrays, strict=True):
        write_idx(path, array)
    return paths


def test_train_on_idx_files_and_resume_them_elsewhere(
    tmp_path, idx_files, capsys, monkeypatch
):
    spec = ",".join(p.name for p in idx_files)
    monkeypatch.chdir(tmp_path)
    tiny = ("--device", "cpu", "--hidden", "4", "--json", "--quiet")
    assert cli.main(["train", "--dataset", spec, *tiny, "--save", "i.npz"]) == 0
    report = strict_json(capsys.readouterr().out.splitlines()[-1])
    assert report["dataset"]["n_train"] == 60 and report["dataset"]["n_test"] == 20
    assert report["history"][-1]["test_accuracy"] is not None
    stored = read_checkpoint(tmp_path / "i.npz")[0]["train_options"]["dataset"]
    assert stored == ",".join(str(p.resolve()) for p in idx_files)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert cli.main(["train", "--resume", "../i.npz", "--epochs", "11", "--quiet"]) == 0
    assert epochs_in(tmp_path / "i.npz") == 11


def test_train_on_an_idx_pair_without_test_set(tmp_path, idx_files, capsys):
    spec = f"{idx_files[0]},{idx_files[1]}"
    args = ["--device", "cpu", "--hidden", "4", "--epochs", "1", "--save"]
    assert cli.main(["train", "--dataset", spec, *args, str(tmp_path / "p.npz")]) == 0
    out = capsys.readouterr().out
    assert "60 train / 0 test" in out and "test acc" not in out
    assert cli.main(["evaluate", str(tmp_path / "p.npz"), "--device", "cpu"]) == 2
    assert "hold no test set" in capsys.readouterr().err


def test_validation_split_on_a_run_without_one_names_it_plainly(tmp_path, capsys):
    # the message used to read "(--validation-split None)"
    path = str(tmp_path / "v.npz")
    tiny = ("--dataset", "mnist-sample", "--device", "cpu", "--hidden", "8")
    assert cli.main(["train", *tiny, "--epochs", "1", "--quiet", "--save", path]) == 0
    capsys.readouterr()
    argv = ["train", "--resume", path, "--epochs", "2", "--validation-split", "0.1"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "None" not in err, err
    assert "(no --validation-split)" in err
