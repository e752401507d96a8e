"""The results record (schema :data:`~xpnet.bench.plan.SCHEMA`): its header,
its rows with the derived rates and ratios, merging into an earlier file, the
remarks drawn from the rows and the ``--json`` digest.

A result is a JSON-ready dict; :mod:`.report` renders it as text and markdown.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import XpnetError
from .cores import over_cores
from .data import REAL_DATA_TEXT, SYNTHETIC_TEXT
from .plan import DTYPE, MODELS, MOMENTUM, SCHEMA, Plan, epoch_flops
from .timing import CONTENTION_CORES

TIMING_TEXT = (
    "timing: one warm-up epoch per system, then the median of {repeats} epochs, "
    "systems interleaved; an epoch = shuffle + every step (last partial batch "
    "included), data already on the device, device synchronised before the "
    "clock is read; xpnet is timed around Sequential.fit(epochs=1, "
    "check_inputs=False): the data was validated once when it was put on the "
    "device, as a multi-epoch fit() validates once per call"
)
FLOPS_TEXT = (
    "FLOPs count the matmuls only: forward 2*N*P, backward 4*N*P minus the "
    "first layer's input gradient (2*N*784*h1), P = weights without biases"
)
ISOLATION_TEXT = (
    "isolation: each system runs in its own worker process (spawned), so the "
    "thread pools of OpenBLAS and of PyTorch's OpenMP/MKL never share a process"
)
IN_PROCESS_TEXT = "isolation: none, all systems ran in one process (--in-process)"
CONTENTION_TEXT = (
    "contention: an epoch during which other processes used more than {cores} "
    "CPU cores (from /proc/stat) is discarded and re-run after the machine is "
    "quiet, at most {retries} times per row; rows marked * kept a contended epoch"
)
DENORMAL_TEXT = (
    "denormals: no system gets a CPU flush-to-zero switch (torch.set_flush_denormal "
    "stays off); xpnet flushes its own optimizer state every "
    "optimizers.FLUSH_EVERY updates as part of its normal training"
)


def new_result(
    plan: Plan,
    env: dict[str, Any],
    peer_messages: list[str],
    argv: Sequence[str] | None = None,
) -> dict[str, Any]:
    """An empty result for ``plan`` on the machine described by ``env``."""
    max_rows = max(plan.rows.values())
    data_text = (SYNTHETIC_TEXT if plan.synthetic else REAL_DATA_TEXT).format(
        rows=max_rows
    )
    if len(set(plan.rows.values())) > 1:
        data_text += " (fewer rows for some models: see the tables)"
    return {
        "schema": SCHEMA,
        "command": list(argv) if argv is not None else None,
        "config": {
            "devices": plan.devices,
            "models": {m: list(MODELS[m]) for m in plan.models},
            "batch_sizes": plan.batch_sizes,
            "rows": plan.rows,
            "repeats": plan.repeats,
            "warmup_epochs": plan.warmup,
            "peers": plan.peers,
            "lr": plan.lr,
            "momentum": MOMENTUM,
            "nesterov": False,
            "weight_decay": 0.0,
            "dtype": DTYPE,
            "data": data_text,
            "synthetic": plan.synthetic,
            "quick": plan.quick,
            "isolated_processes": plan.isolate,
            "contention_cores": CONTENTION_CORES,
            "max_retries_per_row": plan.max_retries,
            "note": plan.note,
            "timing": TIMING_TEXT.format(repeats=plan.repeats),
            "isolation": ISOLATION_TEXT if plan.isolate else IN_PROCESS_TEXT,
            "contention": CONTENTION_TEXT.format(
                cores=CONTENTION_CORES, retries=plan.max_retries
            ),
            "flops": FLOPS_TEXT,
            "denormals": DENORMAL_TEXT,
        },
        "environment": env,
        "gemm": {},
        "peer_messages": plan.device_notes + peer_messages,
        "rows": [],
        "remarks": [],
        "complete": False,
    }


#: each peer's row key of xpnet's time over the peer's
RATIO_KEYS = {
    "pytorch": "ratio_xpnet_torch",
    "sklearn": "ratio_xpnet_sklearn",
    "numpy": "ratio_xpnet_numpy",
    "jax": "ratio_xpnet_jax",
    "pytorch-graph": "ratio_xpnet_torch_graph",
    "xpnet-graph": "ratio_xpnet_xpnet_graph",
}


def _pct_gemm(
    gemm: dict[str, dict[str, Any]], system: str, gflops: float
) -> float | None:
    """``gflops`` in percent of the GEMM ceiling the system is compared with:
    PyTorch's own matmul for PyTorch, the backend's (NumPy or CuPy) for every
    other; None without a ceiling."""
    lib = "pytorch" if system.startswith("pytorch") else "xpnet"
    rate = gemm.get(lib, {}).get("gflops")
    return 100.0 * gflops / rate if rate else None


def combine_gemm(
    before: dict[str, Any], after: dict[str, Any] | None
) -> dict[str, Any]:
    """One GEMM ceiling from measurements before and after a device's rows.

    A ceiling is a maximum, and other processes only ever lower a sample, so
    the faster measurement is kept (with its ``times``); ``measured`` lists
    both, each with its rate and the CPU cores other processes used.
    """
    samples = [("before the rows", before)]
    if after is not None:
        samples.append(("after the rows", after))
    best = max((g for _, g in samples), key=lambda g: g["gflops"])
    return {
        **best,
        "measured": [
            {
                "when": when,
                "gflops": g["gflops"],
                "foreign_cores": g.get("foreign_cores"),
                "contended": bool(g.get("contended", False)),
            }
            for when, g in samples
        ],
    }


def rescale_pct_gemm(result: dict[str, Any], device: str) -> None:
    """Recompute ``pct_gemm`` of every row of ``device`` against the ceiling
    now in ``result["gemm"][device]``."""
    gemm = result["gemm"].get(device, {})
    for row in result["rows"]:
        if row["device"] != device:
            continue
        for name, entry in row["systems"].items():
            entry["pct_gemm"] = _pct_gemm(gemm, name, entry["gflops"])


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not b:
        return None
    return a / b


def make_row(
    model: str,
    sizes: Sequence[int],
    device: str,
    batch_size: int,
    rows: int,
    timings: dict[str, dict[str, Any]],
    gemm: dict[str, dict[str, Any]],
    extra: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One results row: every system's times and the derived figures."""
    flops = epoch_flops(sizes, rows)
    systems: dict[str, Any] = {}
    for name, t in timings.items():
        median = t["median_s"]
        gflops = flops["total"] / median / 1e9
        entry = {
            "median_s": median,
            "times": t["times"],
            "warmup_s": t.get("warmup_s", []),
            "min_s": min(t["times"]),
            "max_s": max(t["times"]),
            "samples_per_s": rows / median,
            "gflops": gflops,
            "pct_gemm": _pct_gemm(gemm, name, gflops),
            "final_loss": t["losses"][-1] if t.get("losses") else None,
            "foreign_cores": t.get("foreign_cores", []),
            "discarded": t.get("discarded", []),
            "contended": bool(t.get("contended", False)),
        }
        entry.update((extra or {}).get(name, {}))
        used = [c for c in t.get("cores_used", []) if c is not None]
        entry["cores_used"] = statistics.median(used) if used else None
        entry["over_cores"] = over_cores(entry["cores_used"], entry.get("cpus_given"))
        systems[name] = entry
    x = systems.get("xpnet", {}).get("median_s")
    return {
        "model": model,
        "sizes": list(sizes),
        "device": device,
        "batch_size": batch_size,
        "rows": rows,
        "steps_per_epoch": math.ceil(rows / batch_size),
        "flops_per_epoch": flops["total"],
        "systems": systems,
        **{
            key: _ratio(x, systems.get(peer, {}).get("median_s"))
            for peer, key in RATIO_KEYS.items()
        },
        "contended": any(v["contended"] for v in systems.values()),
    }


def _row_key(row: dict[str, Any]) -> tuple[str, str, int, int]:
    return (row["model"], row["device"], row["batch_size"], row["rows"])


def add_row(result: dict[str, Any], row: dict[str, Any]) -> None:
    """Add ``row``, replacing an earlier row of the same model, device, batch
    size and rows."""
    result["rows"] = [r for r in result["rows"] if _row_key(r) != _row_key(row)]
    result["rows"].append(row)


def merge_previous(result: dict[str, Any], prev: dict[str, Any]) -> None:
    """Carry the rows and the record of earlier runs of ``prev`` into ``result``."""
    if prev.get("schema") != SCHEMA:
        raise XpnetError(
            f"cannot append to results of schema {prev.get('schema')!r}: "
            f"expected {SCHEMA}; use another --out folder"
        )
    earlier = prev.get("earlier_runs", [])
    earlier.append(
        {
            "command": prev.get("command"),
            "config": prev.get("config"),
            "gemm": prev.get("gemm"),
            "peer_messages": prev.get("peer_messages"),
            "complete": prev.get("complete"),
        }
    )
    result["earlier_runs"] = earlier
    result["rows"] = list(prev.get("rows", []))
    notes = [r["config"].get("note") for r in earlier if r.get("config")]
    notes.append(result["config"]["note"])
    parts = [p for n in notes if n for p in n.split(" | ")]
    result["config"]["note"] = " | ".join(dict.fromkeys(parts))


#: a "% GEMM" above this is impossible against a true ceiling
PCT_GEMM_LIMIT = 100.0
#: the mark beside such a value in tables, explained by :func:`over_ceiling_notes`
OVER_CEILING_MARK = "!"


def over_ceiling(entry: dict[str, Any]) -> bool:
    """Whether a system's ``pct_gemm`` is above :data:`PCT_GEMM_LIMIT`."""
    pct = entry.get("pct_gemm")
    return pct is not None and pct > PCT_GEMM_LIMIT


def over_ceiling_notes(result: dict[str, Any]) -> list[str]:
    """One line per device whose rows have a "% GEMM" above 100, saying why
    such a value cannot be trusted (printed wherever the values are)."""
    notes = []
    for device, libs in result.get("gemm", {}).items():
        rows = [
            (row, name)
            for row in result["rows"]
            if row["device"] == device
            for name, entry in row["systems"].items()
            if over_ceiling(entry)
        ]
        if not rows:
            continue
        worst = max(rows, key=lambda rn: rn[0]["systems"][rn[1]]["pct_gemm"])
        busy = [
            f"{m['when']}: {m['foreign_cores']:.2f} cores"
            for g in libs.values()
            for m in g.get("measured", [])
            if m.get("contended") and m.get("foreign_cores") is not None
        ]
        rates = ", ".join(f"[{lib}] {g['gflops']:.1f}" for lib, g in libs.items())
        head = (
            f"{OVER_CEILING_MARK} % GEMM above 100 on {device} (up to "
            f"{worst[0]['systems'][worst[1]]['pct_gemm']:.0f}, {worst[1]} "
            f"{worst[0]['model']} b={worst[0]['batch_size']}): "
        )
        if not busy and all(name != "xpnet" for _, name in rows):
            # Only peers with matmul kernels of their own (XLA's for jax) beat
            # the rate of the array library's matmul, which xpnet itself uses.
            notes.append(
                head + f"the ceiling is the rate of the array library's own "
                f"matmul ({rates} GFLOP/s), not the hardware's, and no other "
                f"process used the CPU while it was measured: those peers' own "
                f"matmul kernels ran faster than it; xpnet's percentages hold"
            )
            continue
        notes.append(
            head + f"impossible against a true ceiling, so the GEMM rate ({rates} "
            "GFLOP/s) was measured low, "
            + (
                "while other processes used the CPU (" + "; ".join(busy) + ")"
                if busy
                else "most likely while other processes used the CPU"
            )
            + "; these percentages are not reliable: re-run on a quiet machine"
        )
    return notes


def remarks(result: dict[str, Any]) -> list[str]:
    """Notes derived from the rows: systems that used more cores than they
    were given, large input-check shares, denormals."""
    out = []
    over = [
        f"{name} {s['cores_used']:.2f} of {s['cpus_given']} "
        f"({row['model']} b={row['batch_size']})"
        for row in result["rows"]
        for name, s in row["systems"].items()
        if s.get("over_cores")
    ]
    if over:
        out.append(
            "used more cores than its CPU set holds (CPU time / wall time of an "
            "epoch; its times are not comparable): " + "; ".join(over)
        )
    if result.get("kernel_notice"):
        out.append(result["kernel_notice"])
    worst = None
    for row in result["rows"]:
        x = row["systems"].get("xpnet", {})
        checks, median = x.get("input_checks_s"), x.get("median_s")
        if checks is not None and median:
            share = checks / median
            if worst is None or share > worst[0]:
                worst = (share, row, checks)
    if worst is not None:
        share, row, checks = worst
        out.append(
            f"xpnet fit's input checks (prepare_inputs isfinite scan + prepare_targets "
            f"label range) cost {checks * 1e3:.1f} ms per fit call; largest share "
            f"{100 * share:.1f}% of an epoch ({row['model']} b={row['batch_size']} "
            f"on {row['device']}); paid once per fit() call, not in the epoch "
            "times"
        )
    worst_denormal: dict[str, tuple[float, dict[str, Any]]] = {}
    for row in result["rows"]:
        for name, s in row["systems"].items():
            frac = s.get("optimizer_denormal_fraction")
            if frac is not None and frac > worst_denormal.get(name, (-1.0,))[0]:
                worst_denormal[name] = (frac, row)
    if worst_denormal:
        out.append(
            "denormal share of optimizer state (momentum buffers) after a row, "
            "worst row per system: "
            + "; ".join(
                f"{name} {100 * frac:.2f}% ({row['model']} b={row['batch_size']})"
                for name, (frac, row) in worst_denormal.items()
            )
        )
    return out


def output_stem(devices: Sequence[str], date: str) -> str:
    """``cpu-2026-11-22``, ``cuda0-...`` or ``cpu+cuda0-...``."""
    tag = "+".join(d.replace(":", "") for d in devices)
    return f"{tag}-{date}"


#: the files a run writes, per stem
OUTPUT_SUFFIXES = (".json", ".md", ".png")


def _numbered(stem: str) -> Iterator[str]:
    """``stem``, ``stem-2``, ``stem-3``, ..."""
    yield stem
    yield from (f"{stem}-{i}" for i in itertools.count(2))


def _taken(out_dir: Path, stem: str) -> bool:
    return any((out_dir / f"{stem}{ext}").exists() for ext in OUTPUT_SUFFIXES)


def free_stem(out_dir: Path, stem: str) -> str:
    """The first of ``stem``, ``stem-2``, ... with no results file in
    ``out_dir``: a new run never replaces an earlier one of the same day."""
    return next(s for s in _numbered(stem) if not _taken(out_dir, s))


def latest_stem(out_dir: Path, stem: str) -> str:
    """The last of ``stem``, ``stem-2``, ... that exists in ``out_dir`` (the
    file ``--append`` adds to), or ``stem`` when none does."""
    latest = stem
    for candidate in _numbered(stem):
        if not _taken(out_dir, candidate):
            return latest
        latest = candidate
    raise AssertionError("unreachable")


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """A compact, JSON-ready digest of ``result`` (for ``--json``)."""
    return {
        "schema": SCHEMA,
        "complete": result["complete"],
        "paths": result.get("paths", {}),
        "data": result["config"]["data"],
        "skipped": result["peer_messages"],
        "notes": over_ceiling_notes(result),
        "rows": [
            {
                "model": r["model"],
                "device": r["device"],
                "batch_size": r["batch_size"],
                "rows": r["rows"],
                **{f"{k}_s": v["median_s"] for k, v in r["systems"].items()},
                "xpnet_pct_gemm": r["systems"]["xpnet"]["pct_gemm"],
                "xpnet_pct_gemm_over_100": over_ceiling(r["systems"]["xpnet"]),
                # rows of older files may lack the later peers' ratios
                **{key: r.get(key) for key in RATIO_KEYS.values()},
            }
            for r in result["rows"]
        ],
    }
