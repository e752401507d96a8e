"""The scaling benchmark (``xpnet bench --ranks``): its options, its row
arithmetic and report, and (with mpi4py and mpiexec) a tiny run through
mpiexec jobs checking what is written. Timings are not checked."""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil

import pytest

from xpnet import bench as B
from xpnet.bench import mpijob, scaling, timing
from xpnet.bench.plan import SCALING_SCHEMA, weight_count
from xpnet.bench.report import format_report
from xpnet.errors import XpnetError

HAVE_MPI = (
    importlib.util.find_spec("mpi4py") is not None
    and shutil.which("mpiexec") is not None
)


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="xpnet")
    sub = parser.add_subparsers(dest="command")
    B.add_bench_parser(sub)
    return parser.parse_args(["bench", *argv])


def test_ranks_plan_defaults_to_mlp512_and_seed_on_the_cpu_without_peers():
    plan = B.plan_from_args(parse("--ranks", "2"))
    assert plan.ranks == [1, 2]  # 1 is the efficiency's reference
    assert plan.models == ["mlp512", "seed"]
    assert plan.batch_sizes == {
        "mlp512": [512, 1024, 2048, 4096, 8192],
        "seed": [128, 256, 512, 1024, 2048],
    }
    assert plan.devices == ["cpu"] and plan.peers == []
    # without --ranks nothing changes
    plain = B.plan_from_args(parse("--device", "cpu"))
    assert plain.ranks == [] and plain.models == ["seed", "mlp512", "wide"]
    assert plain.peers == ["pytorch", "sklearn", "numpy", "jax", "pytorch-graph"]


@pytest.mark.parametrize(
    "argv,message",
    [
        (("--ranks", "0"), "--ranks must be positive integers"),
        (("--ranks", "2", "--peers", "torch"), "does not combine with --peers"),
        (("--ranks", "2", "--append"), "does not combine with --append"),
        (("--ranks", "2", "--in-process"), "does not combine with --in-process"),
        (("--ranks", "2", "--device", "cuda"), "--ranks runs on the CPU only"),
        (("--overlap",), "--overlap is a set-up of the scaling run"),
    ],
)
def test_bad_scaling_options_are_one_line_errors(argv, message):
    with pytest.raises(XpnetError, match=message) as info:
        B.plan_from_args(parse(*argv))
    assert "\n" not in str(info.value)


def test_setups_are_n_ranks_of_one_thread_and_one_process_of_n_threads():
    got = [(s.name, s.ranks, s.threads) for s in scaling.setups([1, 2])]
    assert got == [("ranks1", 1, 1), ("ranks2", 2, 1), ("threads2", 1, 2)]
    assert [s.name for s in scaling.setups([1])] == ["ranks1"]
    got = [(s.name, s.overlap) for s in scaling.setups([1, 2], overlap=True)]
    assert got == [
        ("ranks1", False),
        ("ranks2", False),
        ("ranks2-overlap", True),
        ("threads2", False),
    ]
    assert B.plan_from_args(parse("--ranks", "2", "--overlap")).overlap is True


def test_missing_mpiexec_is_one_line_with_the_install_hint(monkeypatch):
    monkeypatch.setattr(scaling.shutil, "which", lambda name: None)
    if importlib.util.find_spec("mpi4py") is None:
        match = "--ranks needs mpi4py: pip install 'xpnet\\[mpich\\]'"
    else:
        match = "--ranks needs mpiexec on the PATH: pip install 'xpnet\\[mpich\\]'"
    with pytest.raises(XpnetError, match=match):
        scaling.run_scaling(B.plan_from_args(parse("--ranks", "2")))


def rank(epoch_s, reduce_s, calls=4):
    return {"epoch_s": epoch_s, "reduce_s": reduce_s, "reduce_calls": calls}


def test_breakdown_splits_the_all_reduce_timer_into_transfer_and_wait():
    # 4 steps of 0.01 s alone; the ranks' timers say 0.06 and 0.10 s
    b = scaling.breakdown([rank(1.0, 0.06), rank(1.0, 0.10)], 0.01)
    assert b["compute"] == pytest.approx(0.92)
    assert b["allreduce"] == pytest.approx(0.04)
    assert b["wait"] == pytest.approx(0.04)
    assert sum(b.values()) == pytest.approx(1.0)
    # one rank: no all-reduce, all compute
    assert scaling.breakdown([rank(0.5, 0.0, 0)], None) == {
        "compute": 0.5,
        "allreduce": 0.0,
        "wait": 0.0,
    }


def fake_timings(seconds):
    return {
        name: {"times": [s], "median_s": s, "losses": [1.0]}
        for name, s in seconds.items()
    }


def fake_facts(world_sizes):
    out = {}
    for name, n in world_sizes.items():
        out[name] = {
            "world_size": n,
            "threads_per_rank": 1,
            "breakdown_s": {"compute": 0.5, "allreduce": 0.1 * (n > 1), "wait": 0.0},
            "allreduce": {
                "calls_per_epoch": 4,
                "bytes_per_step": 4 * (weight_count(B.MODELS["seed"]) + 1),
                "timer_s_per_step": 2e-3,
                "alone_s_per_step": 1e-3,
            }
            if n > 1
            else None,
        }
    return out


def fake_result():
    plan = B.plan_from_args(parse("--ranks", "2", "--models", "seed"))
    env = {"date": "2026-11-23T00:00:00+00:00", "versions": {}, "cpu_model": "c"}
    result = scaling.new_scaling_result(plan, env, ["xpnet", "bench"])
    for batch, t2 in ((128, 0.8), (512, 0.6)):
        result["rows"].append(
            scaling.make_scaling_row(
                "seed",
                B.MODELS["seed"],
                batch,
                1000,
                fake_timings({"ranks1": 1.0, "ranks2": t2, "threads2": 0.72}),
                fake_facts({"ranks1": 1, "ranks2": 2, "threads2": 1}),
            )
        )
    result["allreduce_sweep"] = {"ranks2": [{"params": 255, "bytes": 1024, "s": 1e-5}]}
    result["remarks"] = scaling.scaling_remarks(result)
    return result


def test_scaling_rows_report_efficiency_and_ranks_against_threads():
    result = fake_result()
    row = result["rows"][0]
    assert row["efficiency"] == {"ranks2": pytest.approx(1.0 / (2 * 0.8))}
    assert row["ranks_over_threads"] == {"ranks2": pytest.approx(0.72 / 0.8)}
    assert row["systems"]["ranks2"]["samples_per_s"] == pytest.approx(1000 / 0.8)
    assert not [k for k in row if k.startswith("ratio_")]
    assert result["remarks"][0].startswith(
        "seed, 2 ranks: parallel efficiency t1/(2 t2) 0.62-0.83 over b=128..512; "
        "against 1 process with 2 threads 0.90x-1.20x as fast; b=128: compute 83%, "
        "all-reduce 17%, wait 0%"
    )


def test_overlap_saving_is_the_share_of_the_one_call_epoch():
    row = scaling.make_scaling_row(
        "seed",
        B.MODELS["seed"],
        128,
        1000,
        fake_timings({"ranks1": 1.0, "ranks2": 0.8, "ranks2-overlap": 0.76}),
        fake_facts({"ranks1": 1, "ranks2": 2, "ranks2-overlap": 2}),
    )
    assert row["overlap_saves"] == {"ranks2-overlap": pytest.approx(0.05)}
    assert set(row["efficiency"]) == {"ranks2", "ranks2-overlap"}
    assert row["ranks_over_threads"] == {}  # no threads set-up in this row
    remark = scaling.scaling_remarks({"rows": [row]})[1]
    assert remark.startswith(
        "seed, 2 ranks overlapped: parallel efficiency t1/(2 t2) 0.66-0.66 over "
        "b=128..128; overlapping the all-reduce with backward saves 5.0% to 5.0% "
        "of the epoch of ranks2; all-reduce left after backward 2.00 ms/step"
    )


def test_scaling_report_and_plot_render(tmp_path):
    result = fake_result()
    md = format_report(result, markdown=True)
    assert md.startswith("# xpnet scaling benchmark: cpu, 2026-11-23")
    assert "| batch | steps | ranks1 s | ranks2 s | threads2 s |" in md
    assert "| 128 | 8 | 1.000 | 0.800 | 0.720 |" in md
    assert "all-reduce alone, ranks2: 1 kB 0.010 ms (0.10 GB/s)" in md
    if importlib.util.find_spec("matplotlib"):
        assert B.plot_results(result, tmp_path / "s.png") is None
        assert (tmp_path / "s.png").stat().st_size > 1000


# ------------------------------------------------------------- through mpiexec


def quick_plan():
    plan = B.plan_from_args(
        parse("--ranks", "1,2", "--models", "seed", "--rows", "300",
              "--batch-sizes", "128", "--max-retries", "0", "--overlap")
    )  # fmt: skip
    plan.repeats, plan.settle_s = 1, 0.0
    return plan


@pytest.mark.mpi
@pytest.mark.skipif(not HAVE_MPI, reason="needs mpi4py and mpiexec")
def test_scaling_run_writes_rows_with_world_size_and_allreduce_bytes(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(timing, "wait_for_quiet", lambda *a, **k: 0.0)
    monkeypatch.setattr(scaling, "SWEEP_PARAMS", (16, 4096))
    monkeypatch.setattr(scaling, "ALLREDUCE_REPEATS", 3)
    # a file of the same day is never replaced: this run is numbered -2
    stem = f"cpu-scaling-{B.environment()['date'][:10]}"
    (tmp_path / f"{stem}.json").write_text("{}")
    result = scaling.run_scaling(quick_plan(), out_dir=tmp_path, plot=True)
    assert result["paths"]["json"] == str(tmp_path / f"{stem}-2.json")
    saved = json.loads((tmp_path / f"{stem}-2.json").read_text())
    assert saved["schema"] == SCALING_SCHEMA and saved["complete"] is True
    assert saved["config"]["ranks"] == [1, 2]
    assert saved["config"]["setups"]["ranks2"]["blas_threads"] in ([1, 1], [None] * 2)
    (row,) = saved["rows"]
    assert (row["model"], row["batch_size"], row["rows"]) == ("seed", 128, 300)
    systems = row["systems"]
    assert set(systems) == {"ranks1", "ranks2", "ranks2-overlap", "threads2"}
    assert saved["config"]["setups"]["ranks2-overlap"]["overlap"] is True
    sizes = [systems[s]["world_size"] for s in ("ranks1", "ranks2", "threads2")]
    assert sizes == [1, 2, 1]
    assert systems["threads2"]["threads_per_rank"] == 2
    assert systems["ranks2"]["samples_per_rank"] == [150, 150]
    assert systems["ranks1"]["samples_per_rank"] == [300]
    assert systems["ranks1"]["allreduce"] is None
    for name in ("ranks2", "ranks2-overlap"):
        assert systems[name]["world_size"] == 2
        assert systems[name]["samples_per_rank"] == [150, 150]
        reduce = systems[name]["allreduce"]
        # the flat float32 gradient buffer plus the stop flag, once per step
        assert reduce["bytes_per_step"] == 4 * (weight_count(B.MODELS["seed"]) + 1)
        assert reduce["calls_per_epoch"] == 3
        assert len(reduce["alone_times"]) == 3
    for name, entry in systems.items():
        assert len(entry["times"]) == 1 and len(entry["warmup_s"]) == 1, name
        assert set(entry["breakdown_s"]) == {"compute", "allreduce", "wait"}
    assert set(row["efficiency"]) == {"ranks2", "ranks2-overlap"}
    assert set(row["ranks_over_threads"]) == {"ranks2", "ranks2-overlap"}
    assert set(row["overlap_saves"]) == {"ranks2-overlap"}
    sweep = saved["allreduce_sweep"]["ranks2"]
    assert [(p["params"], p["bytes"]) for p in sweep] == [(16, 68), (4096, 16388)]
    md = (tmp_path / f"{stem}-2.md").read_text()
    assert md.startswith("# xpnet scaling benchmark: cpu, ")
    assert "seed (784-16-16-16-10), 300 rows per epoch" in md
    if importlib.util.find_spec("matplotlib"):
        assert (tmp_path / f"{stem}-2.png").stat().st_size > 1000


@pytest.mark.mpi
@pytest.mark.skipif(not HAVE_MPI, reason="needs mpi4py and mpiexec")
def test_a_rank_that_fails_ends_the_job_with_one_line():
    job = mpijob.MPIJob("ranks2", 2, 1)
    try:
        with pytest.raises(XpnetError) as info:
            job.setup(sizes=[784, 10], rows=0, synthetic=False, batch_size=8, lr=0.1)
    finally:
        job.shutdown()
    text = str(info.value)
    assert text.startswith("ranks2 (mpiexec -n 2, 1 thread(s) per rank): rank ")
    assert "XpnetError: rows must be >= 1, got 0" in text and "\n" not in text
    assert job.proc.poll() is not None  # nothing left running


def test_a_rank_loads_a_models_data_once_for_all_its_batch_sizes(monkeypatch):
    from xpnet.bench import workers

    loads = []

    def counting_load(rows, synthetic):
        loads.append((rows, synthetic))
        return B.load_data(rows, synthetic)

    monkeypatch.setattr(workers, "load_data", counting_load)
    cache: dict = {}
    kw = {"sizes": list(B.MODELS["seed"]), "rows": 64, "synthetic": True, "lr": 0.01}
    for batch in (16, 32):
        mpijob.RankRunner(object(), cache, batch_size=batch, **kw).close()
    assert loads == [(64, True)]
