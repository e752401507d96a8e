"""Equal cores and the machine's own BLAS kernel for every timed system
(:mod:`xpnet.bench.cores`, issue 21 items 1 and 2): real worker processes,
their real thread affinities read back from ``/proc``."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

import xpnet.bench as B
from xpnet.bench import cores, report, results, timing, workers
from xpnet.bench import plan as bench_plan
from xpnet.bench.cli import add_bench_arguments
from xpnet.bench.workers import Worker
from xpnet.errors import XpnetError

linux_only = pytest.mark.skipif(
    not Path("/proc/self/task").is_dir() or not hasattr(os, "sched_setaffinity"),
    reason="thread affinities are read from /proc and set with sched_setaffinity",
)


def parse(*argv: str):
    import argparse

    p = argparse.ArgumentParser()
    add_bench_arguments(p)
    return p.parse_args(list(argv))


def thread_cpus(pid: int) -> dict[int, str]:
    """``Cpus_allowed_list`` of every thread of process ``pid``."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        for line in (task / "status").read_text().splitlines():
            if line.startswith("Cpus_allowed_list:"):
                out[int(task.name)] = line.split(":", 1)[1].strip()
    return out


@linux_only
def test_a_worker_binds_every_thread_to_its_cpu_set_not_only_the_first():
    cpu = cores.available_cpus()[-1]
    worker = Worker("numpy", "cpu", cpus=(cpu,))
    try:
        facts = worker.facts()  # numpy (and its BLAS pool) is loaded by now
        threads = thread_cpus(worker.proc.pid)
    finally:
        worker.shutdown()
    assert facts["cpus"] == [cpu] and facts["affinity"] == [cpu]
    # OpenBLAS starts its pool when NumPy is imported: every thread is bound
    assert len(threads) >= 1
    assert set(threads.values()) == {str(cpu)}, threads


def test_every_system_gets_the_same_cpus_from_the_thread_count(monkeypatch):
    available = cores.available_cpus()
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    assert cores.timed_cpus(1) == tuple(available[:1])
    assert cores.timed_cpus(None) == tuple(available)
    started: list = []

    class Recorder:
        def __init__(self, system, device, cpus=None, native_blas=False):
            started.append((system, cpus, native_blas))

    monkeypatch.setattr(workers, "Worker", Recorder)
    plan = bench_plan.plan_from_args(parse("--device", "cpu", "--native-blas"))
    workers.start_systems(["xpnet", "pytorch", "jax"], "cpu", plan)
    assert started == [
        (s, tuple(available[:1]), True) for s in ("xpnet", "pytorch", "jax")
    ]


def test_cores_used_is_cpu_time_over_wall_time():
    class Sleeper:
        def run_epoch(self):
            time.sleep(0.3)
            return 0.0

    class Spinner:
        def run_epoch(self):
            end = time.perf_counter() + 0.3
            while time.perf_counter() < end:
                pass
            return 0.0

    idle = timing.timed_epoch(Sleeper())
    busy = timing.timed_epoch(Spinner())
    assert idle.cores_used is not None and idle.cores_used < 0.1
    # one Python thread spinning: at most one core (and most of one unless the
    # machine is very busy)
    assert busy.cores_used is not None and 0.2 < busy.cores_used < 1.1


@linux_only
def test_a_bound_process_cannot_use_more_cores_than_its_set(tmp_path):
    """Two threads that each keep a core busy, bound to one CPU: at most one
    core's CPU time per wall second, whatever they ask for."""
    cpu = cores.available_cpus()[0]
    saved = os.sched_getaffinity(0)

    def burn(seconds: float) -> None:
        import hashlib

        data = b"x" * (1 << 22)
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            hashlib.sha256(data).digest()  # releases the GIL

    try:
        cores.pin_threads((cpu,))
        start_cpu, start = time.process_time(), time.perf_counter()
        threads = [threading.Thread(target=burn, args=(0.5,)) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        used = cores.cores_used(
            time.process_time() - start_cpu, time.perf_counter() - start
        )
    finally:
        cores.pin_threads(tuple(saved))
    assert used is not None and used <= 1 + cores.OVER_CORES_MARGIN
    assert not cores.over_cores(used, 1)


def test_a_system_that_used_more_cores_than_given_is_flagged_in_the_results():
    timings = {
        name: {
            "times": [1.0, 1.0, 1.0],
            "median_s": 1.0,
            "losses": [0.5],
            "cores_used": used,
        }
        for name, used in (("xpnet", [1.0, 0.98, 1.01]), ("jax", [1.9, 1.95, 1.8]))
    }
    extra = {"xpnet": {"cpus_given": 1}, "jax": {"cpus_given": 1}}
    row = B.make_row("seed", (784, 16, 10), "cpu", 128, 1000, timings, {}, extra)
    assert row["systems"]["xpnet"]["over_cores"] is False
    assert row["systems"]["jax"]["over_cores"] is True
    assert row["systems"]["jax"]["cores_used"] == 1.9
    result = {"rows": [row]}
    notes = results.remarks(result)
    assert any("jax 1.90 of 1" in n and "more cores" in n for n in notes), notes
    cells = report.table_cells(row)
    assert cells[report.TABLE_COLUMNS.index("jax s")].endswith("!")
    assert not cells[report.TABLE_COLUMNS.index("xpnet s")].endswith("!")


def test_native_blas_drops_kernel_variables_for_the_workers_only(monkeypatch):
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    forced = Worker("numpy", "cpu")
    native = Worker("numpy", "cpu", native_blas=True)
    try:
        forced_facts, native_facts = forced.facts(), native.facts()
    finally:
        forced.shutdown()
        native.shutdown()
    assert os.environ["OPENBLAS_CORETYPE"] == "Haswell"  # this process keeps it
    assert forced_facts["forcing"]["OPENBLAS_CORETYPE"] == "Haswell"
    assert "OPENBLAS_CORETYPE" not in native_facts["forcing"]

    def kernel(facts):
        return {
            p["architecture"] for p in facts["pools"] if p["internal_api"] == "openblas"
        }

    if not forced_facts["pools"]:
        pytest.skip("threadpoolctl does not see NumPy's BLAS here")
    assert kernel(forced_facts) == {"Haswell"}
    own = cores.native_kernel()
    assert own is not None
    assert kernel(native_facts) == {own}


def test_a_forced_kernel_is_named_with_how_to_measure_the_machines_own():
    notice = cores.kernel_notice({"OPENBLAS_CORETYPE": "Haswell"}, "SkylakeX")
    assert notice is not None
    assert "OPENBLAS_CORETYPE=Haswell" in notice and "SkylakeX" in notice
    assert "--native-blas" in notice
    assert cores.kernel_notice({}, "SkylakeX") is None
    env = {"OPENBLAS_CORETYPE": "Haswell", "OMP_NUM_THREADS": "1", "HOME": "/root"}
    assert cores.forcing_variables(env) == {
        "OPENBLAS_CORETYPE": "Haswell",
        "OMP_NUM_THREADS": "1",
    }
    assert cores.forced_kernel(env) == {"OPENBLAS_CORETYPE": "Haswell"}


def test_native_blas_in_process_is_refused_in_one_line():
    with pytest.raises(XpnetError, match="--native-blas .* drop --in-process"):
        bench_plan.plan_from_args(parse("--native-blas", "--in-process"))


@linux_only
def test_a_run_records_and_reports_each_systems_cores_and_blas(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(timing, "wait_for_quiet", lambda *a, **k: 0.0)
    monkeypatch.setattr(bench_plan, "SETTLE_S", 0.0)
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    args = parse(
        "--device", "cpu", "--models", "seed", "--rows", "300", "--batch-sizes",
        "128", "--gemm-size", "64", "--out", str(tmp_path), "--peers", "numpy",
        "--no-plot", "--json",
    )  # fmt: skip
    assert B.run_bench(args) == 0
    out = capsys.readouterr().out
    assert "BLAS kernel forced by OPENBLAS_CORETYPE=Haswell" in out
    stem = tmp_path / B.output_stem(["cpu"], B.environment()["date"][:10])
    result = json.loads(stem.with_suffix(".json").read_text())
    cpu = [cores.available_cpus()[0]]
    facts = result["system_facts"]["cpu"]
    assert set(facts) == {"xpnet", "numpy"}
    assert all(f["cpus"] == cpu and f["affinity"] == cpu for f in facts.values())
    for name, system in result["rows"][0]["systems"].items():
        assert system["cpus_given"] == 1, name
        assert 0 < system["cores_used"] <= 1 + cores.OVER_CORES_MARGIN, name
        assert system["over_cores"] is False
    md = stem.with_suffix(".md").read_text()
    assert f"- cpu xpnet: CPUs {cpu[0]} |" in md
    assert any("--native-blas" in r for r in result["remarks"])
