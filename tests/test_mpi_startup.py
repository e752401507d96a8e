"""Issue 16 item 26 (and 28's ``--hidden 0`` under MPI): start-up errors
found by one rank are one line from rank 0, exit 2, no ``MPI_Abort``; a
stopped rank makes the others stop with one line after ``XPNET_MPI_TIMEOUT``;
each rank gets its share of the host's cores as BLAS threads. Real
``mpiexec`` runs (MPICH from the venv), each under a timeout."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mpi4py", reason="needs mpi4py: pip install 'xpnet[mpich]'")

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from test_mpi import (  # noqa: E402
    LIMIT,
    MPIEXEC,
    _start_long_run,
    _wait,
    cli,
    environment,
)

pytestmark = [
    pytest.mark.mpi,
    pytest.mark.skipif(MPIEXEC is None, reason="needs mpiexec (pip install mpich)"),
]

QUICK = ["--epochs", "1", "--hidden", "8", "--distributed", "--blas-threads", "1"]


def _one_line_no_abort(run: subprocess.CompletedProcess) -> str:
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert "abort" not in run.stderr.lower(), run.stderr
    return lines[0]


def _mpiexec(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    assert MPIEXEC is not None
    return subprocess.run(
        [MPIEXEC, *args], capture_output=True, text=True, timeout=LIMIT,
        env=environment(), cwd=cwd,
    )  # fmt: skip


def test_item26_an_unwritable_save_is_one_line_from_rank_0(tmp_path):
    run = _mpiexec(
        "-n", "2", *cli("--dataset", "mnist-sample", *QUICK,
                        "--save", "/proc/xpnet-test.npz"),
        cwd=tmp_path,
    )  # fmt: skip
    line = _one_line_no_abort(run)
    assert "/proc/xpnet-test.npz" in line and "choose a writable --save" in line


def test_item26_a_dataset_missing_on_one_rank_is_one_line_from_rank_0(tmp_path):
    """Rank 0 finds d.npz in its folder, rank 1 (started elsewhere) does not."""
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "a" / "d.npz",
        x_train=rng.integers(0, 256, (60, 784), dtype=np.uint8),
        y_train=np.arange(60) % 10,
        x_test=rng.integers(0, 256, (20, 784), dtype=np.uint8),
        y_test=np.arange(20) % 10,
    )
    rank = cli("--dataset", "d.npz", *QUICK)
    run = _mpiexec(
        "-n", "1", "-wdir", str(tmp_path / "a"), *rank, ":",
        "-n", "1", "-wdir", str(tmp_path / "b"), *rank,
        cwd=tmp_path,
    )  # fmt: skip
    line = _one_line_no_abort(run)
    assert line.startswith("xpnet: error: rank 1: ")
    assert str(tmp_path / "b" / "d.npz") in line


def test_item26_a_missing_resume_is_one_line_from_rank_0(tmp_path):
    run = _mpiexec(
        "-n", "2", *cli("--resume", "missing.npz", *QUICK), cwd=tmp_path
    )  # fmt: skip
    assert "'missing.npz' does not exist" in _one_line_no_abort(run)


def test_item28_a_bad_option_under_mpi_is_said_once(tmp_path):
    run = _mpiexec(
        "-n", "2", *cli("--dataset", "mnist-sample", "--distributed",
                        "--hidden", "0"),
        cwd=tmp_path,
    )  # fmt: skip
    assert "layer widths must be positive" in _one_line_no_abort(run)


@pytest.mark.parametrize("stopped", [1, 0])
def test_item26_a_stopped_rank_stops_the_others_after_the_timeout(
    tmp_path, monkeypatch, stopped
):
    from xpnet.checkpoint import Checkpoint

    monkeypatch.setenv("XPNET_MPI_TIMEOUT", "2")
    proc, save, pids = _start_long_run(tmp_path)
    os.kill(pids[stopped], signal.SIGSTOP)
    try:
        seconds, err = _wait(proc, 60)
    finally:
        for pid in pids.values():  # never leave a stopped process behind
            for sig in (signal.SIGCONT, signal.SIGKILL):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
    assert proc.returncode == 1, err
    assert seconds < 30
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    waiting = 1 - stopped  # the one left to say it
    assert lines[0].startswith(f"xpnet: error: rank {waiting} of 2 waited 2 s for")
    assert "XPNET_MPI_TIMEOUT" in lines[0]
    assert "long.npz holds epoch" in lines[0]
    assert Checkpoint.from_file(str(save)).model.epochs_trained >= 1


def test_item26_each_rank_gets_its_share_of_blas_threads(tmp_path):
    from xpnet.threads import cpu_count

    env = environment()
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.pop(name, None)
    assert MPIEXEC is not None
    run = subprocess.run(
        [MPIEXEC, "-n", "2", *cli("--dataset", "mnist-sample", "--epochs", "1",
                                  "--hidden", "8", "--distributed")],
        capture_output=True, text=True, timeout=LIMIT, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    first = run.stdout.splitlines()[0]
    cores = cpu_count()
    share = max(1, cores // 2)
    said = f"| {share} BLAS thread{'s' * (share != 1)} per rank ({cores} core"
    assert said in first and "/ 2 ranks on this host)" in first, first
    assert "the CPU is busy" not in run.stderr  # no hint: the share is chosen


def test_item26_the_timeout_setting_is_checked(monkeypatch):
    from xpnet.distributed.stall import DEFAULT_TIMEOUT, stall_timeout
    from xpnet.errors import XpnetError

    monkeypatch.delenv("XPNET_MPI_TIMEOUT", raising=False)
    assert stall_timeout(None) == DEFAULT_TIMEOUT == 300
    assert stall_timeout(0) is None and stall_timeout(2.5) == 2.5
    monkeypatch.setenv("XPNET_MPI_TIMEOUT", "soon")
    with pytest.raises(XpnetError, match="XPNET_MPI_TIMEOUT='soon'"):
        stall_timeout(None)
    with pytest.raises(XpnetError, match="seconds >= 0"):
        stall_timeout(-1)


def test_item26_a_bad_timeout_setting_is_said_once(tmp_path, monkeypatch):
    monkeypatch.setenv("XPNET_MPI_TIMEOUT", "soon")
    run = _mpiexec(
        "-n", "2", *cli("--dataset", "mnist-sample", *QUICK), cwd=tmp_path
    )  # fmt: skip
    assert "XPNET_MPI_TIMEOUT='soon'" in _one_line_no_abort(run)
