"""Files other programs own are never lost (issue 16, items 1-8).

Each test reproduces one item through the real console script (subprocesses,
real files, links, FIFOs, real concurrent processes); a few call
:mod:`xpnet.atomic` directly where the race has to be made certain.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from xpnet import atomic, checkpoint, runlock
from xpnet.checkpoint import Checkpoint, read_checkpoint
from xpnet.model import mlp

# Attributes are looked up in the tests, so each fails on its own on code
# that lacks them (the suite is checked against the code before the fix).
MAX_SEED = 2**128  # xpnet.rng.MAX_SEED: the range the checkpoint reader takes

SCRIPT = Path(sys.executable).with_name("xpnet")
SMALL = ("--dataset", "mnist-sample", "--device", "cpu", "--hidden", "16", "--quiet")


def start(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [str(SCRIPT), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def run(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    proc = start(*args, cwd=cwd)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, proc.stderr
    return proc


def one_line(proc: subprocess.CompletedProcess) -> str:
    """The single stderr line of a refused command (exit 2, no traceback)."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = [
        ln
        for ln in proc.stderr.splitlines()
        if ln.strip() and not ln.startswith("xpnet: device auto:")
    ]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def epochs_in(path: Path) -> int:
    return read_checkpoint(path)[0]["epochs_trained"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A one-epoch checkpoint to export, plot and resume (copied per test)."""
    where = tmp_path_factory.mktemp("trained")
    ok(run("train", *SMALL, "--epochs", "1", "--save", "one.npz", cwd=where))
    return where / "one.npz"


def copy_of(trained: Path, where: Path, name: str = "run.npz") -> Path:
    target = where / name
    target.write_bytes(trained.read_bytes())
    return target


def wait_for(condition, proc: subprocess.Popen, seconds: float = 60) -> None:
    end = time.monotonic() + seconds
    while not condition():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < end, "timed out"
        time.sleep(0.02)


# -- item 1: the lock file is never followed, shared or truncated ----------------
@pytest.mark.parametrize("how", ["symlink", "hardlink", "foreign-file"])
def test_item1_lock_file_that_is_a_link_or_not_ours_is_left_intact(tmp_path, how):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    lock = tmp_path / "run.npz.lock"
    if how == "symlink":
        lock.symlink_to("victim.txt")
    elif how == "hardlink":
        os.link(victim, lock)
    else:
        lock.write_text("precious\n")
    proc = run("train", *SMALL, "--epochs", "1", "--save", "run.npz", cwd=tmp_path)
    line = one_line(proc)
    assert "run.npz.lock" in line and "not xpnet's" in line, line
    assert victim.read_text() == "precious\n"
    assert lock.read_text() == "precious\n"
    assert not (tmp_path / "run.npz").exists()


def test_item1_lock_link_left_intact_when_nothing_is_left_to_train(tmp_path, trained):
    copy_of(trained, tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (tmp_path / "run.npz.lock").symlink_to("victim.txt")
    # The run refuses at once (--epochs already reached): still untouched.
    ok(run("train", "--resume", "run.npz", "--epochs", "1", cwd=tmp_path))
    assert victim.read_text() == "precious\n"
    assert (tmp_path / "run.npz.lock").is_symlink()


# -- item 2: the lock does not depend on a path anyone can delete ---------------
def test_item2_deleted_lock_file_does_not_let_a_second_run_resume(tmp_path):
    first = start("train", *SMALL, "--epochs", "400", "--save", "run.npz", cwd=tmp_path)
    try:
        wait_for(lambda: (tmp_path / "run.npz.json").exists(), first)
        (tmp_path / "run.npz.lock").unlink()
        second = run("train", "--resume", "run.npz", "--epochs", "400", cwd=tmp_path)
        line = one_line(second)
        assert "in use by another xpnet process" in line, line
        # The first run made its lock file again and goes on saving.
        wait_for(lambda: (tmp_path / "run.npz.lock").exists(), first)
        assert first.poll() is None
    finally:
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=60)
    assert "run.npz holds epoch" in err, err


def test_item2_replaced_lock_file_stops_the_run_without_saving(tmp_path):
    lock = runlock.CheckpointLock(tmp_path / "run.npz").acquire()
    try:
        (tmp_path / "run.npz.lock").unlink()
        (tmp_path / "run.npz.lock").write_text("12345\n")  # another process's
        with pytest.raises(runlock.LockError, match="was replaced while this run"):
            lock.verify()
    finally:
        lock.release()
    # Not ours: release leaves the other process's lock file alone.
    assert (tmp_path / "run.npz.lock").read_text() == "12345\n"


# -- item 3: a new output is created exclusively ---------------------------------
def test_item3_exclusive_write_refuses_a_file_that_appeared_meanwhile(tmp_path):
    out = tmp_path / "out.bin"
    with pytest.raises(atomic.OutputError, match="appeared while this ran"):
        with atomic.atomic_write(out, exclusive=True) as f:
            f.write(b"mine")
            out.write_bytes(b"theirs")  # another process got there first
    assert out.read_bytes() == b"theirs"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]  # no temp left


def test_item3_owned_output_never_replaces_a_file_put_there_by_another(tmp_path):
    out = atomic.OwnedOutput(tmp_path / "c.png", may_replace=False)
    with out.write() as f:
        f.write(b"first")
    with out.write() as f:  # our own file: redrawn
        f.write(b"second")
    (tmp_path / "c.png").unlink()
    (tmp_path / "c.png").write_bytes(b"theirs")
    with pytest.raises(atomic.OutputError, match="replaced or removed by another"):
        with out.write() as f:
            f.write(b"third")
    assert (tmp_path / "c.png").read_bytes() == b"theirs"


def _race(commands: list[tuple[str, ...]], cwd: Path) -> list[subprocess.Popen]:
    procs = [start(*c, cwd=cwd) for c in commands]
    for p in procs:
        p.communicate(timeout=180)
    return procs


def _one_wins(procs: list[subprocess.Popen]) -> None:
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], [(p.returncode, p.stderr) for p in procs]


@pytest.mark.parametrize("command", ["export", "plot"])
def test_item3_two_writers_of_one_new_output_one_is_refused(tmp_path, trained, command):
    copy_of(trained, tmp_path, "a.npz")
    if command == "export":
        pytest.importorskip("onnx")
        args = ("export", "a.npz", "m.onnx")
    else:
        pytest.importorskip("matplotlib")
        args = ("plot", "a.npz", "-o", "c.png")
    results = []
    for _ in range(2):  # the loser may be refused early or at the end
        for leftover in ("m.onnx", "c.png"):
            (tmp_path / leftover).unlink(missing_ok=True)
        procs = [start(*args, cwd=tmp_path) for _ in range(2)]
        for p in procs:
            p.wait(timeout=180)
        results.append(sorted(p.returncode for p in procs))
    assert results == [[0, 2], [0, 2]], results


def test_item3_two_trainings_with_one_plot_one_is_refused(tmp_path):
    pytest.importorskip("matplotlib")
    procs = [
        start("train", *SMALL, "--epochs", "2", "--plot", "c.png", cwd=tmp_path)
        for _ in range(2)
    ]
    for p in procs:
        p.wait(timeout=180)
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], [p.communicate() for p in procs]
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"


# -- item 4: --seed takes what the checkpoint reader accepts --------------------
def test_item4_seed_beyond_what_a_checkpoint_records_is_refused_at_parse_time(
    tmp_path,
):
    proc = run(
        "train",
        *SMALL,
        "--epochs",
        "1",
        "--seed",
        str(MAX_SEED + 1),
        "--save",
        "s.npz",
        cwd=tmp_path,
    )
    assert "--seed" in one_line(proc) and "2**128" in one_line(proc)
    assert not (tmp_path / "s.npz").exists()
    # The largest seed accepted is one the reader takes back.
    ok(
        run(
            "train",
            *SMALL,
            "--epochs",
            "1",
            "--seed",
            str(MAX_SEED),
            "--save",
            "s.npz",
            cwd=tmp_path,
        )
    )
    ok(run("evaluate", "s.npz", cwd=tmp_path))
    model = mlp([4, 2], seed=MAX_SEED + 1)
    with pytest.raises(ValueError, match="cannot be saved"):
        Checkpoint(model).to_file(tmp_path / "lib.npz")
    assert not (tmp_path / "lib.npz").exists()


# -- item 5: a rewritten file keeps its mode -------------------------------------
def test_item5_resumed_checkpoint_keeps_its_permissions(tmp_path, trained):
    path = copy_of(trained, tmp_path)
    path.chmod(0o600)
    ok(run("train", "--resume", "run.npz", "--epochs", "2", cwd=tmp_path))
    assert epochs_in(path) == 2
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# -- item 6: a failed .json copy says which file holds what ---------------------
def test_item6_sidecar_failure_says_the_npz_was_written(tmp_path):
    proc = start("train", *SMALL, "--epochs", "400", "--save", "run.npz", cwd=tmp_path)
    sidecar = tmp_path / "run.npz.json"
    try:
        wait_for(sidecar.exists, proc)
        while True:  # the run may rewrite it between our unlink and mkdir
            sidecar.unlink(missing_ok=True)
            try:
                sidecar.mkdir()
                break
            except FileExistsError:
                continue
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 2, err
    (line,) = [ln for ln in err.splitlines() if ln.strip()]
    epoch = epochs_in(tmp_path / "run.npz")
    assert epoch >= 1
    assert f"run.npz holds epoch {epoch}, but its .json copy was not written" in line


def test_item6_library_save_says_the_npz_was_written(tmp_path):
    (tmp_path / "m.npz.json").mkdir()
    with pytest.raises(checkpoint.SidecarWriteError, match="m.npz' was written, but"):
        Checkpoint(mlp([4, 2], seed=0)).to_file(tmp_path / "m.npz")
    assert read_checkpoint(tmp_path / "m.npz")[0]["epochs_trained"] == 0


# -- item 7: a FIFO (or device) as an output is refused at once -----------------
@pytest.mark.parametrize(
    "args",
    [
        ("train", *SMALL, "--epochs", "1", "--plot", "out.png"),
        ("plot", "run.npz", "-o", "out.png"),
        ("export", "run.npz", "out.onnx"),
        ("train", *SMALL, "--epochs", "1", "--save", "out.npz"),
    ],
    ids=["train-plot", "plot-o", "export", "train-save"],
)
def test_item7_fifo_output_is_refused_at_once(tmp_path, trained, args):
    copy_of(trained, tmp_path)
    out = next(a for a in args if a.startswith("out."))
    os.mkfifo(tmp_path / out)
    line = one_line(run(*args, cwd=tmp_path, timeout=60))
    assert "FIFO" in line and out in line, line


# -- item 8: --resume through a symbolic link writes through to the target ------
def test_item8_resume_through_a_symlink_keeps_the_link(tmp_path, trained):
    (tmp_path / "real").mkdir()
    target = copy_of(trained, tmp_path / "real")
    (tmp_path / "link.npz").symlink_to("real/run.npz")
    proc = ok(run("train", "--resume", "link.npz", "--epochs", "2", cwd=tmp_path))
    assert (tmp_path / "link.npz").is_symlink()
    assert epochs_in(target) == 2
    assert (tmp_path / "real" / "run.npz.json").exists()
    assert "is a symbolic link: the checkpoint is written to its target" in (
        proc.stderr
    )
    assert not (tmp_path / "link.npz.lock").exists()


def test_item8_link_to_another_kind_of_file_is_refused_not_written_through(tmp_path):
    victim = tmp_path / "notes.txt"
    victim.write_text("precious\n")
    (tmp_path / "run.npz").symlink_to("notes.txt")
    (tmp_path / "c.png").symlink_to("notes.txt")
    for args in (
        ("train", *SMALL, "--epochs", "1", "--save", "run.npz", "--overwrite"),
        ("train", *SMALL, "--epochs", "1", "--plot", "c.png", "--overwrite"),
    ):
        line = one_line(run(*args, cwd=tmp_path))
        assert "is a symbolic link to" in line and "notes.txt" in line, line
    assert victim.read_text() == "precious\n"
    assert (tmp_path / "run.npz").is_symlink() and (tmp_path / "c.png").is_symlink()


def test_save_into_a_folder_that_does_not_exist_yet_makes_it(tmp_path):
    ok(run("train", *SMALL, "--epochs", "1", "--save", "new/run.npz", cwd=tmp_path))
    assert epochs_in(tmp_path / "new" / "run.npz") == 1
    assert not (tmp_path / "new" / "run.npz.lock").exists()


def test_item3_bench_result_files_of_a_racing_run_are_refused(tmp_path):
    from xpnet import bench

    def result() -> dict:
        return {
            "schema": bench.SCHEMA,
            "config": {"devices": ["cpu"], "data": "d", "lr": 0.01,
                       "momentum": 0.9, "dtype": "float32", "repeats": 3},
            "environment": {"date": "2026-11-22T00:00:00+00:00", "versions": {},
                            "cpu_model": "c", "cpu_affinity": 2},
            "gemm": {},
            "rows": [],
        }  # fmt: skip

    from xpnet.bench.run import ResultFiles

    # Two runs that picked the same free name: the first writes (and rewrites
    # after each row), the second is refused instead of replacing its files.
    first = ResultFiles(result(), tmp_path, "cpu-x", lambda r: [], plot=False)
    second = ResultFiles(result(), tmp_path, "cpu-x", lambda r: [], plot=False)
    first.save()
    written = (tmp_path / "cpu-x.json").read_bytes()
    with pytest.raises(atomic.OutputError, match="appeared while this ran"):
        second.save()
    assert (tmp_path / "cpu-x.json").read_bytes() == written
    first.result["rows"] = []
    first.save()  # its own files: rewritten
    # --append continues an existing run's files.
    ResultFiles(result(), tmp_path, "cpu-x", lambda r: [], False, append=True).save()
