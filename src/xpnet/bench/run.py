"""The run: for each device start the systems, measure the GEMM ceiling, then
time every model and batch size of the plan row by row, saving after each row.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import timing
from .cores import facts_lines, forced_kernel, kernel_notice, native_kernel
from .machine import environment
from .peers import peer_messages, peer_skip_reason
from .plan import MODELS, PEERS, Plan
from .report import result_outputs, write_outputs
from .results import (
    add_row,
    combine_gemm,
    free_stem,
    latest_stem,
    make_row,
    merge_previous,
    new_result,
    output_stem,
    rescale_pct_gemm,
)
from .results import remarks as derive_remarks
from .timing import EpochTiming, time_runners
from .workers import start_systems


def wait_for_quiet(plan: Plan) -> float:
    """Wait up to ``plan.quiet_wait_s`` for a quiet machine (not at all at 0);
    the seconds waited."""
    if plan.quiet_wait_s <= 0:
        return 0.0
    return timing.wait_for_quiet(max_wait=plan.quiet_wait_s)


def numbered_stem(out_dir: Path, stem: str, say: Callable[[str], None]) -> str:
    """``stem``, or the next free numbered one (``stem-2``, ...): a run never
    replaces an earlier run's files of the same day."""
    free = free_stem(out_dir, stem)
    if free != stem:
        say(f"{out_dir / stem}.json exists: this run writes {free}.*")
    return free


class ResultFiles:
    """A run's result files (``stem.json``, ``.md``; ``.png`` at the end),
    rewritten after every row so a stopped run keeps the rows it finished.
    ``remarks(result)`` derives the result's remarks before each write. A
    new run's files are created exclusively (``append`` continues existing
    ones): of two runs that picked the same free name, the second is refused.
    """

    def __init__(
        self,
        result: dict[str, Any],
        out_dir: Path | None,
        stem: str,
        remarks: Callable[[dict[str, Any]], list[str]],
        plot: bool,
        append: bool = False,
    ) -> None:
        self.result, self.out_dir, self.stem = result, out_dir, stem
        self.remarks, self.plot = remarks, plot
        self.outputs = (
            result_outputs(out_dir, stem, append=append) if out_dir is not None else {}
        )
        #: what the last write wrote, by kind (json, md, png or plot message)
        self.paths: dict[str, str] = {}

    def save(self, final: bool = False) -> None:
        self.result["remarks"] = self.remarks(self.result)
        if self.out_dir is not None:
            self.paths = write_outputs(
                self.result,
                self.out_dir,
                self.stem,
                plot=self.plot and final,
                outputs=self.outputs,
            )


def row_settings(plan: Plan, model: str, batch: int) -> dict[str, Any]:
    """What every system of a row is set up with: the model's layer sizes, the
    plan's rows and data, the batch size and the learning rate."""
    return {
        "sizes": list(MODELS[model]),
        "rows": plan.rows[model],
        "synthetic": plan.synthetic,
        "batch_size": batch,
        "lr": plan.lr,
    }


def time_row(
    runners: dict[str, Any],
    plan: Plan,
    on_contention: Callable[[str, EpochTiming], None],
) -> dict[str, Any]:
    """Time one row's systems, interleaved, with the plan's repeats, warm-up
    and contention rules (:func:`~xpnet.bench.timing.time_runners`)."""
    return time_runners(
        runners,
        plan.repeats,
        plan.warmup,
        max_retries=plan.max_retries,
        settle_s=plan.settle_s,
        on_contention=on_contention,
        quiet_wait_s=plan.quiet_wait_s,
    )


def contention_notice(say: Callable[[str], None]) -> Callable[[str, EpochTiming], None]:
    """What :func:`~xpnet.bench.timing.time_runners` calls for an epoch it
    discards because other processes used the CPU: one line via ``say``."""

    def on_contention(name: str, t: EpochTiming) -> None:
        say(
            f"  {name}: epoch of {t.seconds:.3f}s discarded (other processes used "
            f"{t.foreign_cores:.2f} CPU cores); waiting for quiet and re-running"
        )

    return on_contention


def run_plan(
    plan: Plan,
    out_dir: Path | None = None,
    plot: bool = True,
    log: Callable[[str], None] | None = None,
    argv: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Run every row of ``plan``; write results after each row when ``out_dir``.

    With ``plan.isolate`` (the default) each system runs in its own worker
    process; otherwise all run in this process.
    """
    say: Callable[[str], None] = log or (lambda _msg: None)
    env = environment(plan.devices)
    stem = output_stem(plan.devices, env["date"][:10])
    result = new_result(plan, env, peer_messages(plan.peers, plan.devices), argv)
    if out_dir is not None and plan.append:
        stem = latest_stem(out_dir, stem)
        if (out_dir / f"{stem}.json").is_file():
            merge_previous(result, json.loads((out_dir / f"{stem}.json").read_text()))
            say(f"appending to {out_dir / f'{stem}.json'}")
    elif out_dir is not None:
        stem = numbered_stem(out_dir, stem, say)
    forced = forced_kernel()
    if forced and not plan.native_blas:
        notice = kernel_notice(forced, native_kernel())
        result["kernel_notice"] = notice
        say(notice or "")
    for line in result["peer_messages"]:
        say(line)
    files = ResultFiles(result, out_dir, stem, derive_remarks, plot, append=plan.append)
    save = files.save
    on_contention = contention_notice(say)

    for device in plan.devices:
        systems = ["xpnet"] + [
            p for p in PEERS if p in plan.peers and not peer_skip_reason(p, device)
        ]
        workers = start_systems(systems, device, plan)
        try:
            facts = {name: w.facts() for name, w in workers.items()}
            result.setdefault("system_facts", {})[device] = facts
            for line in facts_lines(facts):
                say(line)
            gemm = measure_ceilings(workers, device, plan, say)
            result["gemm"][device] = gemm
            for model in plan.models:
                sizes, rows = MODELS[model], plan.rows[model]
                for batch in plan.batch_sizes[model]:
                    start = time.perf_counter()
                    waited = wait_for_quiet(plan)
                    kw = row_settings(plan, model, batch)
                    try:
                        state = workers["xpnet"].setup(state=None, **kw)
                        for name in systems[1:]:
                            workers[name].setup(state=state, **kw)
                        del state
                        timings = time_row(workers, plan, on_contention)
                        extra = {k: w.extras() for k, w in workers.items()}
                        for k, f in facts.items():
                            if f.get("cpus"):
                                extra[k]["cpus_given"] = len(f["cpus"])
                    finally:
                        for w in workers.values():
                            w.close()
                    row = make_row(
                        model, sizes, device, batch, rows, timings, gemm, extra
                    )
                    row["waited_for_quiet_s"] = round(waited, 2)
                    add_row(result, row)
                    save()
                    say(
                        f"{model} {device} b={batch}: "
                        + ", ".join(
                            f"{k} {v['median_s']:.3f}s"
                            for k, v in row["systems"].items()
                        )
                        + f"  (row took {time.perf_counter() - start:.0f}s)"
                    )
                if plot and out_dir is not None:
                    save(final=True)
            # The ceiling again after the rows: the faster of the two counts, so
            # one measurement disturbed by other processes cannot put rows above
            # 100% of it (the rows' % GEMM are recomputed against it).
            after = measure_ceilings(workers, device, plan, say, when="after the rows")
            result["gemm"][device] = {
                lib: combine_gemm(g, after.get(lib)) for lib, g in gemm.items()
            }
            rescale_pct_gemm(result, device)
        finally:
            for w in workers.values():
                w.shutdown()
    result["complete"] = True
    save(final=plot)
    result["paths"] = files.paths
    return result


def measure_ceilings(
    workers: dict[str, Any],
    device: str,
    plan: Plan,
    say: Callable[[str], None],
    when: str = "before the rows",
) -> dict[str, dict[str, Any]]:
    """The float32 GEMM rate of xpnet's backend and of PyTorch on ``device``,
    each measured in its worker after waiting for a quiet machine."""
    gemm: dict[str, dict[str, Any]] = {}
    for lib in ("xpnet", "pytorch"):
        if lib in workers:
            wait_for_quiet(plan)
            g = gemm[lib] = workers[lib].gemm(plan.gemm_size[device])
            busy = (
                f" (contended: other processes used {g['foreign_cores']:.2f} cores)"
                if g.get("contended")
                else ""
            )
            say(
                f"GEMM {device} [{lib}] {g['n']}^3 {when}: {g['gflops']:.1f} "
                f"GFLOP/s{busy}"
            )
    return gemm
