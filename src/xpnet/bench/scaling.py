"""The scaling run (``xpnet bench --ranks 1,2``): data-parallel xpnet on 1, 2,
... MPI ranks of one BLAS thread each against one process with as many
threads, on the CPU.

Each set-up is an ``mpiexec`` job of its own (:class:`.mpijob.MPIJob`),
started once and driven row by row with the benchmark's protocol (one warm-up
epoch, then the median of ``repeats`` epochs, set-ups interleaved, epochs
disturbed by other processes re-run). An epoch's time is the slowest rank's
epoch loop (``History`` seconds: shuffle, every step with its all-reduce, the
metrics read-back); the start-up checks and broadcast of each
``fit(epochs=1)`` call, which a multi-epoch run pays once, are kept apart
(``fit_s``).

Per row: samples/s, the parallel efficiency ``t1 / (N tN)``, and where an
N-rank epoch goes (:func:`breakdown`): compute (all but the all-reduce), the
all-reduce itself (per step, timed after a barrier so nobody waits, host
staging included) and the rest of the all-reduce timer, waiting for the
slower rank. Per job, the all-reduce time against the bytes moved.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import XpnetError
from .cores import spawn_environment
from .machine import environment
from .mpijob import MPIJob
from .plan import MODELS, SCALING_SCHEMA, Plan, weight_count
from .results import RATIO_KEYS, add_row, make_row, new_result
from .run import (
    ResultFiles,
    contention_notice,
    numbered_stem,
    row_settings,
    time_row,
    wait_for_quiet,
)

#: timed all-reduces per row (after a barrier each), median reported
ALLREDUCE_REPEATS = 20
#: float32 buffer sizes (parameters) of the all-reduce sweep of each job
SWEEP_PARAMS = tuple(4**k for k in range(4, 11))

SCALING_TIMING_TEXT = (
    "timing: each set-up is one mpiexec job (ranks x BLAS threads per rank), "
    "started once; per row one warm-up epoch per set-up, then the median of "
    "{repeats} epochs, set-ups interleaved; an epoch = the slowest rank's "
    "epoch loop of Sequential.fit(epochs=1, communicator=...) (History "
    "seconds: shuffle, every step with its all-reduce, the metrics read-back); "
    "the per-call start-up checks and parameter broadcast are in fit_s, not "
    "in the epoch"
)
BREAKDOWN_TEXT = (
    "where an N-rank epoch goes (ranks' mean, the median epoch): compute = "
    "epoch minus the all-reduce timer; all-reduce = steps x the all-reduce of "
    "one step timed after a barrier (host staging included, nobody waits); "
    "wait = the rest of the all-reduce timer: waiting for the slower rank "
    "(imbalance, scheduling)"
)
ISOLATION_TEXT = (
    "isolation: every set-up is an mpiexec job of its own; its ranks wait for "
    "commands on sockets, not in MPI calls (no busy polling between epochs); "
    "BLAS threads set by OMP/OPENBLAS/MKL_NUM_THREADS and checked with "
    "threadpoolctl"
)


@dataclass(frozen=True)
class Setup:
    """One configuration: ``ranks`` processes of ``threads`` BLAS threads;
    ``overlap``: the all-reduce overlapped with backward."""

    name: str
    ranks: int
    threads: int
    overlap: bool = False


def setups(ranks: Sequence[int], overlap: bool = False) -> list[Setup]:
    """``ranksN`` (N ranks, 1 thread each) for every N, with ``overlap`` also
    ``ranksN-overlap`` for N > 1, and ``threadsT`` (one process, T = the
    largest N threads) when T > 1."""
    out = []
    for n in sorted(ranks):
        out.append(Setup(f"ranks{n}", n, 1))
        if overlap and n > 1:
            out.append(Setup(f"ranks{n}-overlap", n, 1, overlap=True))
    top = max(ranks)
    if top > 1:
        out.append(Setup(f"threads{top}", 1, top))
    return out


def check_mpi() -> str:
    """The ``mpiexec`` to use, or one XpnetError line on how to get MPI."""
    from ..distributed.mpi import INSTALL_HINT

    if importlib.util.find_spec("mpi4py") is None:
        raise XpnetError(f"--ranks needs mpi4py: {INSTALL_HINT}")
    mpiexec = shutil.which("mpiexec")
    if mpiexec is None:
        raise XpnetError(f"--ranks needs mpiexec on the PATH: {INSTALL_HINT}")
    return mpiexec


# ------------------------------------------------------------------ the rows


def _median_epoch(details: list[dict[str, Any]], times: list[float]) -> list[Any]:
    """Every rank's figures of the kept epoch with the (lower) median time."""
    kept = [d for d in details if d["seconds"] in times] or details
    kept = sorted(kept, key=lambda d: d["seconds"])
    return kept[(len(kept) - 1) // 2]["ranks"]


def breakdown(ranks: list[dict[str, Any]], step_s: float | None) -> dict[str, float]:
    """Seconds of an epoch (the ranks' mean) in compute, the all-reduce and
    waiting; ``step_s``: one step's all-reduce when nobody waits."""
    epoch = statistics.fmean(r["epoch_s"] for r in ranks)
    reduce = statistics.fmean(r["reduce_s"] for r in ranks)
    calls = ranks[0]["reduce_calls"]
    allreduce = min(calls * step_s, reduce) if calls and step_s else 0.0
    return {
        "compute": epoch - reduce,
        "allreduce": allreduce,
        "wait": reduce - allreduce,
    }


def setup_facts(job: MPIJob, times: list[float], params: int) -> dict[str, Any]:
    """What a row records of one set-up besides its epoch times: world size,
    threads, samples per rank, the all-reduce per step (timer and alone,
    bytes) and the :func:`breakdown`."""
    ranks = _median_epoch(job.details, times)
    facts: dict[str, Any] = {
        "world_size": job.ranks,
        "threads_per_rank": job.threads,
        "blas_threads": [i["blas_threads"] for i in job.info],
        "samples_per_rank": [r["samples"] for r in ranks],
        "epoch_s_by_rank": [r["epoch_s"] for r in ranks],
        "fit_s": max(r["fit_s"] for r in ranks),
        "allreduce": None,
    }
    calls = ranks[0]["reduce_calls"]
    step_s = None
    if calls:
        alone = job.allreduce(params, ALLREDUCE_REPEATS)
        step_s = statistics.median(alone)
        facts["allreduce"] = {
            "calls_per_epoch": calls,
            "bytes_per_step": ranks[0]["reduce_bytes"] // calls,
            "timer_s_per_step": statistics.fmean(
                r["reduce_s"] / r["reduce_calls"] for r in ranks
            ),
            "alone_s_per_step": step_s,
            "alone_times": alone,
        }
    facts["breakdown_s"] = breakdown(ranks, step_s)
    return facts


def make_scaling_row(
    model: str,
    sizes: Sequence[int],
    batch_size: int,
    rows: int,
    timings: dict[str, dict[str, Any]],
    facts: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """One row: every set-up's times and facts, the efficiencies and speed-ups."""
    row = make_row(model, sizes, "cpu", batch_size, rows, timings, {}, facts)
    for key in RATIO_KEYS.values():
        del row[key]
    systems = row["systems"]
    t1 = systems["ranks1"]["median_s"]
    threads = [s for s in systems if s.startswith("threads")]
    row["efficiency"], row["ranks_over_threads"] = {}, {}
    # the share of the one-call epoch time that overlapping saves
    row["overlap_saves"] = {
        name: 1.0 - entry["median_s"] / systems[name[: -len("-overlap")]]["median_s"]
        for name, entry in systems.items()
        if name.endswith("-overlap")
    }
    for name, entry in systems.items():
        n = entry["world_size"]
        if n > 1:
            row["efficiency"][name] = t1 / (n * entry["median_s"])
            if threads:
                # above 1: the ranks are faster than one process's threads
                t = systems[threads[0]]["median_s"]
                row["ranks_over_threads"][name] = t / entry["median_s"]
    return row


def _pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.0f}%" if whole else "-"


def scaling_remarks(result: dict[str, Any]) -> list[str]:
    """Per model and rank count: the efficiency range, ranks against threads,
    where the epoch goes at the smallest and largest batch, all-reduce rate."""
    out = []
    by_model: dict[str, list[dict[str, Any]]] = {}
    for row in result["rows"]:
        by_model.setdefault(row["model"], []).append(row)
    for model, rows in by_model.items():
        rows = sorted(rows, key=lambda r: r["batch_size"])
        for name in rows[0]["efficiency"]:
            out.append(_remark(model, name, rows))
    return out


def _remark(model: str, name: str, rows: list[dict[str, Any]]) -> str:
    eff = [r["efficiency"][name] for r in rows]
    n = rows[0]["systems"][name]["world_size"]
    overlapped = name.endswith("-overlap")
    text = (
        f"{model}, {n} ranks{' overlapped' if overlapped else ''}: parallel "
        f"efficiency t1/({n} t{n}) {min(eff):.2f}-{max(eff):.2f} over "
        f"b={rows[0]['batch_size']}..{rows[-1]['batch_size']}"
    )
    vs = [r["ranks_over_threads"].get(name) for r in rows]
    if all(v is not None for v in vs):
        text += (
            f"; against 1 process with {n} threads "
            f"{min(vs):.2f}x-{max(vs):.2f}x as fast"
        )
    a = rows[0]["systems"][name]["allreduce"]
    if overlapped:
        # Its timer holds only what backward did not hide: no breakdown.
        saves = [r["overlap_saves"][name] for r in rows]
        text += (
            f"; overlapping the all-reduce with backward saves "
            f"{100 * min(saves):.1f}% to {100 * max(saves):.1f}% of the epoch of "
            f"{name[: -len('-overlap')]}"
        )
        if a:
            text += (
                f"; all-reduce left after backward "
                f"{a['timer_s_per_step'] * 1e3:.2f} ms/step at b="
                f"{rows[0]['batch_size']} ({a['alone_s_per_step'] * 1e3:.2f} ms alone)"
            )
        return text
    for r in {id(x): x for x in (rows[0], rows[-1])}.values():
        b = r["systems"][name]["breakdown_s"]
        whole = sum(b.values())
        text += (
            f"; b={r['batch_size']}: compute {_pct(b['compute'], whole)}, "
            f"all-reduce {_pct(b['allreduce'], whole)}, wait {_pct(b['wait'], whole)}"
        )
    if a:
        text += (
            f"; all-reduce of {a['bytes_per_step'] / 1e3:,.0f} kB per step: "
            f"{a['alone_s_per_step'] * 1e3:.2f} ms alone "
            f"({a['bytes_per_step'] / a['alone_s_per_step'] / 1e9:.2f} GB/s)"
        )
    return text


# ------------------------------------------------------------------- the run


def new_scaling_result(
    plan: Plan, env: dict[str, Any], argv: Sequence[str] | None
) -> dict[str, Any]:
    """An empty scaling result: the benchmark's header with the scaling texts."""
    result = new_result(plan, env, [], argv)
    result["schema"] = SCALING_SCHEMA
    cfg = result["config"]
    cfg["ranks"] = list(plan.ranks)
    cfg["setups"] = {
        s.name: {"ranks": s.ranks, "threads_per_rank": s.threads, "overlap": s.overlap}
        for s in setups(plan.ranks, plan.overlap)
    }
    cfg["timing"] = SCALING_TIMING_TEXT.format(repeats=plan.repeats)
    cfg["isolation"] = ISOLATION_TEXT
    cfg["breakdown"] = BREAKDOWN_TEXT
    del cfg["peers"]
    result["allreduce_sweep"] = {}
    return result


def run_scaling(
    plan: Plan,
    out_dir: Path | None = None,
    plot: bool = True,
    log: Callable[[str], None] | None = None,
    argv: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Run every row of a scaling ``plan``; write results after each row."""
    say: Callable[[str], None] = log or (lambda _msg: None)
    mpiexec = check_mpi()
    env = environment(["cpu"])
    stem = f"cpu-scaling-{env['date'][:10]}"
    if out_dir is not None:
        stem = numbered_stem(out_dir, stem, say)
    result = new_scaling_result(plan, env, argv)
    files = ResultFiles(result, out_dir, stem, scaling_remarks, plot)
    save = files.save
    on_contention = contention_notice(say)

    jobs: dict[str, MPIJob] = {}
    try:
        for s in setups(plan.ranks, plan.overlap):
            with spawn_environment(plan.native_blas):
                jobs[s.name] = MPIJob(
                    s.name, s.ranks, s.threads, mpiexec=mpiexec, overlap=s.overlap
                )
            result["config"]["setups"][s.name]["blas_threads"] = [
                i["blas_threads"] for i in jobs[s.name].info
            ]
        for model in plan.models:
            sizes, rows = MODELS[model], plan.rows[model]
            for batch in plan.batch_sizes[model]:
                start = time.perf_counter()
                waited = wait_for_quiet(plan)
                kw = row_settings(plan, model, batch)
                try:
                    for job in jobs.values():
                        job.setup(**kw)
                    timings = time_row(jobs, plan, on_contention)
                    facts = {
                        name: setup_facts(
                            job, timings[name]["times"], weight_count(sizes)
                        )
                        for name, job in jobs.items()
                    }
                finally:
                    for job in jobs.values():
                        if job.proc.poll() is None:
                            job.close()
                row = make_scaling_row(model, sizes, batch, rows, timings, facts)
                row["waited_for_quiet_s"] = round(waited, 2)
                add_row(result, row)
                save()
                say(
                    f"{model} b={batch}: "
                    + ", ".join(
                        f"{k} {v['median_s']:.3f}s" for k, v in row["systems"].items()
                    )
                    + "; efficiency "
                    + ", ".join(f"{k} {v:.2f}" for k, v in row["efficiency"].items())
                    + f"  (row took {time.perf_counter() - start:.0f}s)"
                )
        for name, job in jobs.items():
            # the overlapped jobs' all-reduce alone is the same call
            if job.ranks > 1 and not name.endswith("-overlap"):
                result["allreduce_sweep"][name] = allreduce_sweep(job)
    finally:
        for job in jobs.values():
            job.shutdown()
    result["complete"] = True
    save(final=plot)
    result["paths"] = files.paths
    return result


def allreduce_sweep(job: MPIJob) -> list[dict[str, Any]]:
    """The all-reduce of a step (after a barrier) for float32 buffers of
    :data:`SWEEP_PARAMS` values (+1, the stop flag): median seconds, bytes."""
    out = []
    for p in SWEEP_PARAMS:
        seconds = statistics.median(job.allreduce(p, ALLREDUCE_REPEATS))
        nbytes = 4 * (p + 1)
        out.append({"params": p, "bytes": nbytes, "s": seconds})
    return out


def scaling_summary(result: dict[str, Any]) -> dict[str, Any]:
    """A compact, JSON-ready digest of a scaling result (``--json``)."""
    return {
        "schema": SCALING_SCHEMA,
        "complete": result["complete"],
        "paths": result.get("paths", {}),
        "data": result["config"]["data"],
        "rows": [
            {
                "model": r["model"],
                "batch_size": r["batch_size"],
                "rows": r["rows"],
                **{f"{k}_s": v["median_s"] for k, v in r["systems"].items()},
                "efficiency": r["efficiency"],
                "ranks_over_threads": r["ranks_over_threads"],
            }
            for r in result["rows"]
        ],
    }


def run_scaling_bench(plan: Plan, out_dir: Path, args: argparse.Namespace) -> int:
    """``xpnet bench --ranks ...``: run, print the report, the files and
    (``--json``) the digest; returns the exit code."""
    from .report import print_outcome

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    log(
        "xpnet bench (scaling): "
        + ", ".join(
            f"{s.name} = {s.ranks} rank(s) x {s.threads} thread(s)"
            + (" overlapped" if s.overlap else "")
            for s in setups(plan.ranks, plan.overlap)
        )
        + "; models "
        + ", ".join(f"{m} b={plan.batch_sizes[m]}" for m in plan.models)
        + f"; repeats {plan.repeats}; results in {out_dir}"
    )
    result = run_scaling(
        plan, out_dir=out_dir, plot=not args.no_plot, log=log, argv=sys.argv
    )
    print_outcome(result, scaling_summary, args.json)
    return 0
