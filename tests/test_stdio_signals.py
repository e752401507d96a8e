"""Issue 16 item 25: closed, full and broken standard streams, a second
Ctrl-C, SIGHUP, and SIGTERM during the end-of-epoch test evaluation. Each
is a real ``python -m xpnet train`` subprocess; each stop is one line on
stderr naming what the checkpoint holds, never a traceback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from xpnet.checkpoint import read_checkpoint

SRC = Path(__file__).resolve().parents[1] / "src"
#: seconds any one run may take before the test fails (a hang fails fast)
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


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "xpnet", "train", *QUICK, *args]


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr and "Exception ignored" not in stderr
    return lines[0]


def test_item25_closed_stderr_trains_and_saves(tmp_path):
    """``2>&-``: stderr is put on /dev/null; the run is not harmed, and no
    file the run opens takes descriptor 2 (the checkpoint stays sound)."""
    save = tmp_path / "run.npz"
    run = subprocess.run(
        _command("--epochs", "1", "--save", str(save)),
        stdout=subprocess.PIPE, text=True, timeout=LIMIT, env=_env(),
        preexec_fn=lambda: os.close(2),
    )  # fmt: skip
    assert run.returncode == 0, run.stdout
    assert "error" not in run.stdout and "done: 1 epoch" in run.stdout
    assert read_checkpoint(save)[0]["epochs_trained"] == 1


def test_item25_full_stdout_stops_with_one_line(tmp_path):
    """``>/dev/full``: exit 1 (not Python's 120), one line naming the file."""
    save = tmp_path / "run.npz"
    with open("/dev/full", "w") as full:
        run = subprocess.run(
            _command("--epochs", "1", "--save", str(save)),
            stdout=full, stderr=subprocess.PIPE, text=True, timeout=LIMIT,
            env=_env(),
        )  # fmt: skip
    assert run.returncode == 1, run.stderr
    line = _one_error_line(run.stderr)
    assert "standard output cannot be written (No space left on device)" in line
    assert "run.npz" in line


def test_item25_reader_that_leaves_stops_the_run_with_one_line(tmp_path):
    """``| head -1``: exit 1, no BrokenPipeError, the checkpoint named."""
    save = tmp_path / "run.npz"
    proc = subprocess.Popen(
        _command("--epochs", "3", "--save", str(save)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(LIMIT) == 1, err
    assert first.startswith("xpnet ")
    line = _one_error_line(err)
    assert "standard output was closed by its reader (broken pipe)" in line
    assert "run.npz" in line


def _start_long_run(tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    """A run of many short epochs, returned once its checkpoint holds epoch 1."""
    save = tmp_path / "long.npz"
    proc = subprocess.Popen(
        _command("--epochs", "500", "--batch-size", "8", "--quiet",
                 "--save", str(save)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
    )  # fmt: skip
    sidecar = save.with_name(save.name + ".json")
    deadline = time.monotonic() + LIMIT
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if json.loads(sidecar.read_text())["epochs_trained"] >= 1:
                return proc, save
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"the run did not start: {proc.communicate()}")


def _stopped(proc: subprocess.Popen) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=LIMIT)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("the run did not stop")
    return proc.returncode, err


def test_item25_two_sigints_50_ms_apart_are_one_stop(tmp_path):
    proc, save = _start_long_run(tmp_path)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    code, err = _stopped(proc)
    assert code == 1, err  # not -2: death by SIGINT
    line = _one_error_line(err)
    held = read_checkpoint(save)[0]["epochs_trained"]
    assert line.startswith("xpnet: interrupted in epoch")
    assert f"long.npz holds epoch {held}" in line


def test_item25_sighup_stops_like_sigterm(tmp_path):
    proc, save = _start_long_run(tmp_path)
    proc.send_signal(signal.SIGHUP)
    code, err = _stopped(proc)
    assert code == 128 + signal.SIGHUP, err
    line = _one_error_line(err)
    held = read_checkpoint(save)[0]["epochs_trained"]
    assert line.startswith("xpnet: hung up (SIGHUP) in epoch")
    assert f"long.npz holds epoch {held}" in line and "--resume" in line


# SIGTERM sent by the process to itself while the end-of-epoch test
# evaluation runs: the injection makes the moment exact, the signal is real.
_SIGTERM_IN_EVALUATION = """
import os, signal, sys
from xpnet.model import Sequential
from xpnet.cli import main

evaluate = Sequential.evaluate_prepared

def evaluate_and_be_terminated(self, *args, **kwargs):
    if self.epochs_trained == 2:
        os.kill(os.getpid(), signal.SIGTERM)
    return evaluate(self, *args, **kwargs)

Sequential.evaluate_prepared = evaluate_and_be_terminated
sys.exit(main(sys.argv[1:]))
"""


def test_item25_sigterm_during_the_test_evaluation_keeps_that_epoch(tmp_path):
    save = tmp_path / "run.npz"
    run = subprocess.run(
        [sys.executable, "-c", _SIGTERM_IN_EVALUATION, "train", *QUICK,
         "--epochs", "5", "--quiet", "--save", str(save)],
        capture_output=True, text=True, timeout=LIMIT, env=_env(),
    )  # fmt: skip
    assert run.returncode == 143, run.stderr
    line = _one_error_line(run.stderr)
    assert read_checkpoint(save)[0]["epochs_trained"] == 2  # not 1: kept
    assert line.startswith("xpnet: terminated (SIGTERM) in epoch 3; ")
    assert "run.npz holds epoch 2" in line
