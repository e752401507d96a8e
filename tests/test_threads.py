"""xpnet.threads: ``xpnet train --blas-threads auto`` gives the BLAS the cores
other work leaves; without it the BLAS keeps its own (reproducible) count."""

from __future__ import annotations

import pytest
from threadpoolctl import threadpool_info

from xpnet import cli, threads
from xpnet.threads import USER_SETTINGS, blas_threads_for, limited_blas_threads


def _blas_threads() -> list[int]:
    return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]


@pytest.mark.parametrize(
    "cpus,others,threads",
    [(2, 0.0, None), (2, 0.4, None), (2, 1.0, 1), (2, 6.5, 1), (8, 2.2, 6)],
)
def test_threads_are_the_cores_others_leave(cpus, others, threads):
    assert blas_threads_for(cpus, others) == threads


@pytest.fixture
def busy(monkeypatch):
    """A machine where other processes fill every core."""
    monkeypatch.setattr(threads, "other_running_processes", lambda: 64.0)
    for name in USER_SETTINGS:
        monkeypatch.delenv(name, raising=False)


def test_other_processes_are_counted_from_the_runnable_tasks(monkeypatch):
    import builtins
    import io

    real_open = builtins.open

    def fake_open(path, *args, **kwargs):
        if path == "/proc/loadavg":
            return io.StringIO("0.50 0.40 0.30 3/120 4242\n")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)
    # 3 runnable, this process among them; not the load average (0.5).
    assert threads.other_running_processes(pause=0) == 2


def test_a_busy_machine_limits_the_blas_while_the_block_runs(busy):
    if not _blas_threads():
        pytest.skip("threadpoolctl finds no BLAS here")
    before = _blas_threads()
    with limited_blas_threads() as limit:
        assert limit == 1 and set(_blas_threads()) == {1}
    assert _blas_threads() == before


def test_a_users_thread_setting_is_kept(busy, monkeypatch):
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")
    with limited_blas_threads() as limit:
        assert limit is None


ARGV = ["train", "--dataset", "mnist-sample", "--hidden", "8", "--epochs", "1"]


def test_train_limits_the_blas_only_when_asked_and_says_so(busy, capsys):
    assert cli.main([*ARGV, "--device", "cpu", "--blas-threads", "auto"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.endswith("| 1 BLAS thread")
    assert cli.main([*ARGV, "--device", "cpu", "--blas-threads", "2"]) == 0
    assert capsys.readouterr().out.splitlines()[0].endswith("| 2 BLAS threads")


def test_a_busy_cpu_keeps_the_blas_default_and_hints(busy, capsys, monkeypatch):
    """The thread count changes float32 results, so the load must not choose
    it unasked: the run keeps the BLAS's threads and says what would help."""
    seen = []
    real = threads.limited_blas_threads

    def spy(setting="auto"):
        seen.append(setting)
        return real(setting)

    monkeypatch.setattr("xpnet.cli.train.limited_blas_threads", spy)
    before = _blas_threads()
    assert cli.main([*ARGV, "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert seen == [] and _blas_threads() == before
    assert "BLAS thread" not in captured.out.splitlines()[0]
    hint = [line for line in captured.err.splitlines() if "--blas-threads" in line]
    assert len(hint) == 1 and "the CPU is busy" in hint[0], captured.err


def test_bad_blas_threads_is_one_line(capsys):
    with pytest.raises(SystemExit) as exit:
        cli.main([*ARGV, "--blas-threads", "0"])
    assert exit.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "whole number of threads" in err[0]
