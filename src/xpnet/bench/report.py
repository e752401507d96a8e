"""A result rendered for people: the text report, its markdown twin, the tables,
and the files ``STEM.json``, ``STEM.md`` (and ``STEM.png``) written atomically.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..atomic import OwnedOutput
from ..errors import XpnetError
from ..filekinds import not_a_file
from .cores import facts_lines
from .plan import MODELS, QUICK_TEXT, SCALING_SCHEMA
from .results import (
    DENORMAL_TEXT,
    FLOPS_TEXT,
    IN_PROCESS_TEXT,
    OUTPUT_SUFFIXES,
    OVER_CEILING_MARK,
    TIMING_TEXT,
    over_ceiling,
    over_ceiling_notes,
)

Row = dict[str, Any]
#: ``(model, device, rows)`` -> that group's rows, by batch size
Groups = list[tuple[tuple[str, str, int], list[Row]]]

TABLE_COLUMNS = (
    "batch",
    "xpnet s",
    "samples/s",
    "GFLOP/s",
    "% GEMM",
    "torch s",
    "xpnet/torch",
    "sklearn s",
    "xpnet/sklearn",
    "numpy s",
    "xpnet/numpy",
    "jax s",
    "xpnet/jax",
)


#: the columns added where a table has a CUDA-graph peer (GPU rows)
GRAPH_COLUMNS = (
    "torch-graph s",
    "xpnet/torch-graph",
    "xpnet-graph s",
    "xpnet/xpnet-graph",
)


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


#: after a system's time: it used more cores than its CPU set holds
OVER_CORES_MARK = "!"


def _seconds(system: dict[str, Any]) -> str:
    mark = OVER_CORES_MARK if system.get("over_cores") else ""
    return _fmt(system.get("median_s"), ".3f") + mark


def has_graph_peers(rows: Sequence[Row]) -> bool:
    """Whether any of ``rows`` timed a CUDA-graph peer (then the table has
    :data:`GRAPH_COLUMNS` too)."""
    return any(
        k in r["systems"] for r in rows for k in ("pytorch-graph", "xpnet-graph")
    )


def table_cells(row: Row, graphs: bool = False) -> list[str]:
    """The cells of ``row`` under :data:`TABLE_COLUMNS` (``*``: contended;
    ``!`` after a time: that system used more cores than it was given), then
    under :data:`GRAPH_COLUMNS` when ``graphs``."""
    s = row["systems"]
    x = s.get("xpnet", {})
    extra = [
        _seconds(s.get("pytorch-graph", {})),
        _fmt(row.get("ratio_xpnet_torch_graph"), ".2f"),
        _seconds(s.get("xpnet-graph", {})),
        _fmt(row.get("ratio_xpnet_xpnet_graph"), ".2f"),
    ]
    return [
        str(row["batch_size"]) + ("*" if row.get("contended") else ""),
        _seconds(x),
        _fmt(x.get("samples_per_s"), ",.0f"),
        _fmt(x.get("gflops"), ".1f"),
        _fmt(x.get("pct_gemm"), ".0f") + (OVER_CEILING_MARK if over_ceiling(x) else ""),
        _seconds(s.get("pytorch", {})),
        _fmt(row.get("ratio_xpnet_torch"), ".2f"),
        _seconds(s.get("sklearn", {})),
        _fmt(row.get("ratio_xpnet_sklearn"), ".2f"),
        _seconds(s.get("numpy", {})),
        _fmt(row.get("ratio_xpnet_numpy"), ".2f"),
        _seconds(s.get("jax", {})),
        _fmt(row.get("ratio_xpnet_jax"), ".2f"),
    ] + (extra if graphs else [])


def format_table(rows: Sequence[Row], markdown: bool = False) -> str:
    """A text (or markdown) table of ``rows`` with :data:`TABLE_COLUMNS`."""
    graphs = has_graph_peers(rows)
    columns = TABLE_COLUMNS + (GRAPH_COLUMNS if graphs else ())
    cells = [table_cells(r, graphs) for r in rows]
    if markdown:
        lines = [
            "| " + " | ".join(columns) + " |",
            "|" + "|".join("---:" for _ in columns) + "|",
        ]
        lines += ["| " + " | ".join(c) + " |" for c in cells]
        return "\n".join(lines)
    widths = [
        max(len(h), *(len(c[i]) for c in cells)) if cells else len(h)
        for i, h in enumerate(columns)
    ]
    lines = ["  ".join(h.rjust(w) for h, w in zip(columns, widths, strict=True))]
    lines += [
        "  ".join(v.rjust(w) for v, w in zip(c, widths, strict=True)) for c in cells
    ]
    return "\n".join(lines)


def _title(model: str, device: str, rows: int) -> str:
    sizes = "-".join(str(s) for s in MODELS.get(model, ()))
    return f"{model} ({sizes}) on {device}, {rows:,} rows per epoch"


def groups(result: dict[str, Any]) -> Groups:
    """The rows of ``result`` grouped by model, device and rows, in first-seen
    order, each group sorted by batch size."""
    found: dict[tuple[str, str, int], list[Row]] = {}
    for row in result["rows"]:
        found.setdefault((row["model"], row["device"], row["rows"]), []).append(row)
    return [(k, sorted(v, key=lambda r: r["batch_size"])) for k, v in found.items()]


def header_lines(result: dict[str, Any]) -> list[str]:
    """What was run, how, and on what: the lines above the tables."""
    cfg = result["config"]
    lines = [
        f"xpnet bench {result['environment']['date']}, "
        f"devices {', '.join(cfg['devices'])}",
        f"data: {cfg['data']}",
        f"training: SGD lr {cfg['lr']} momentum {cfg['momentum']} (no Nesterov, no "
        f"weight decay), {cfg['dtype']}, softmax cross-entropy, shuffle every epoch",
        cfg.get("timing") or TIMING_TEXT.format(repeats=cfg["repeats"]),
        cfg.get("isolation") or IN_PROCESS_TEXT,
        cfg.get("contention") or "contention: not checked",
        FLOPS_TEXT,
        DENORMAL_TEXT,
    ]
    if cfg.get("quick"):
        lines.append(QUICK_TEXT)
    for device, libs in result["gemm"].items():
        for lib, g in libs.items():
            lines.append(
                f"GEMM {device} {g['what']} {g['n']}^3 float32: "
                f"{g['gflops']:.1f} GFLOP/s (best of {len(g['times'])}"
                + _gemm_samples(g)
                + f") [{lib}]"
            )
    earlier = result.get("earlier_runs", [])
    prefix = "last run: " if earlier else ""
    lines += [prefix + m for m in result.get("peer_messages", [])]
    if earlier:
        lines.append(f"last run: {_command_text(result.get('command'))}")
    for i, run in enumerate(earlier, 1):
        lines.append(
            f"earlier run {i} (rows merged into this file): "
            f"{_command_text(run.get('command'))}; skipped: "
            + ("; ".join(run.get("peer_messages") or []) or "nothing")
            + "; GEMM "
            + ", ".join(
                f"{dev} [{lib}] {g['gflops']:.1f}"
                for dev, libs in (run.get("gemm") or {}).items()
                for lib, g in libs.items()
            )
            + " GFLOP/s"
        )
    if cfg.get("note"):
        # Appended runs carry their predecessors' notes: show each once.
        for note in dict.fromkeys(cfg["note"].split(" | ")):
            lines.append(f"note: {note}")
    lines.append(
        "ratios: xpnet time / peer time (below 1 = xpnet faster); "
        "% GEMM = xpnet GFLOP/s / the device's measured GEMM rate"
    )
    return lines


def _gemm_samples(gemm: dict[str, Any]) -> str:
    """``, the faster of before the rows 70.1 and after the rows 75.5
    (contended before the rows: 1.20 other cores)`` for a re-measured ceiling."""
    measured = gemm.get("measured", [])
    text = ""
    if len(measured) > 1:
        text = ", the faster of " + " and ".join(
            f"{m['when']} {m['gflops']:.1f}" for m in measured
        )
    busy = [
        f"{m['when']}: {m['foreign_cores']:.2f} other cores"
        for m in measured
        if m.get("contended") and m.get("foreign_cores") is not None
    ]
    if busy:
        text += " (contended " + "; ".join(busy) + ")"
    return text


def _command_text(argv: Sequence[str] | None) -> str:
    """The options of a recorded command line, without the ``--note`` text."""
    if not argv:
        return "?"
    out, skip = [], False
    for arg in list(argv)[1:]:
        if skip:
            skip = False
            continue
        if arg == "--note":
            skip = True
            continue
        if not arg.startswith("--note="):
            out.append(arg)
    return "xpnet bench " + " ".join(out)


def format_report(result: dict[str, Any], markdown: bool = False) -> str:
    """The whole report: header lines, then one table per model and device
    (a scaling run's: :func:`.scaling_report.format_scaling_report`)."""
    if result.get("schema") == SCALING_SCHEMA:
        from .scaling_report import format_scaling_report

        return format_scaling_report(result, markdown)
    out = []
    if markdown:
        env = result["environment"]
        v = env["versions"]
        out.append(
            f"# xpnet throughput benchmark: {', '.join(result['config']['devices'])}, "
            f"{env['date'][:10]}\n"
        )
        out += [f"- {line}" for line in header_lines(result)]
        gpus = "; ".join(
            g.get("nvidia_smi") or g.get("name") or "?" for g in env.get("gpus", [])
        )
        out.append(
            f"- machine: {env['cpu_model']}, {env['cpu_affinity']} CPU threads"
            + (f", GPUs: {gpus}" if gpus else "")
            + f"; numpy BLAS: {env.get('numpy_blas', '?')}; "
            f"torch threads {env.get('torch_threads')}"
        )
        out.append(
            "- versions: "
            + ", ".join(f"{k} {val}" for k, val in v.items() if val is not None)
        )
        for device, facts in result.get("system_facts", {}).items():
            out += [f"- {device} {line}" for line in facts_lines(facts)]
        out.append("")
    else:
        out += header_lines(result)
        out.append("")
    for (model, device, rows), group in groups(result):
        title = _title(model, device, rows)
        out.append(f"## {title}\n" if markdown else title)
        out.append(format_table(group, markdown=markdown))
        out.append("")
    for line in over_ceiling_notes(result) + result.get("remarks", []):
        out.append(f"- {line}" if markdown else line)
    return "\n".join(out).rstrip() + "\n"


def print_outcome(
    result: dict[str, Any],
    summary_of: Callable[[dict[str, Any]], dict[str, Any]],
    as_json: bool,
) -> None:
    """What ``xpnet bench`` prints at the end of a run: the report, the files
    written and, with ``as_json``, ``summary_of(result)`` as the last line."""
    print(format_report(result))
    for kind, path in result.get("paths", {}).items():
        print(f"{kind}: {path}" if kind != "plot" else path)
    if as_json:
        print(json.dumps(summary_of(result), separators=(",", ":")))


def _write_text(output: OwnedOutput, text: str) -> None:
    with output.write() as f:
        f.write(text.encode("utf-8"))


def check_results_folder(out_dir: Path, option: str = "--out") -> Path:
    """Refuse, before any timing, a results folder that cannot be one: an
    existing path that is not a folder (a file, ``/dev/full``), a path under
    a file, or a folder this process cannot write into. Returns ``out_dir``
    (made later, by the first write, when it does not exist yet).

    Raises:
        XpnetError: one line naming ``option`` and what is wrong.
    """
    existing = next((p for p in (out_dir, *out_dir.parents) if p.exists()), None)
    where = existing if existing is not None else Path(".")
    if not where.is_dir():
        # not_a_file: None for a regular file, else "is a FIFO ..., not a file"
        kind = (not_a_file(where) or "is a file").removesuffix(", not a file")
        named = "" if where == out_dir else f": {str(where)!r}"
        raise XpnetError(
            f"{option} {str(out_dir)!r}{named} {kind}, not a folder: {option} "
            "names the folder the results are written to"
        )
    if not os.access(where, os.W_OK | os.X_OK):
        raise XpnetError(
            f"{option} {str(out_dir)!r}: cannot write into {str(where)!r} "
            "(permission denied): choose a writable folder"
        )
    return out_dir


def result_outputs(out_dir: Path, stem: str, *, append: bool) -> dict[str, OwnedOutput]:
    """The files of one run, by suffix (``.json``, ``.md``, ``.png``): created
    exclusively (a run racing for the same name is refused with one line)
    unless ``append`` continues them, then rewritten while they are ours."""
    return {
        ext: OwnedOutput(
            out_dir / f"{stem}{ext}", may_replace=append, follow_links=False
        )
        for ext in OUTPUT_SUFFIXES
    }


def write_outputs(
    result: dict[str, Any],
    out_dir: Path,
    stem: str,
    plot: bool = True,
    outputs: dict[str, OwnedOutput] | None = None,
) -> dict[str, str]:
    """Write ``stem.json`` and ``stem.md`` (and ``stem.png``); return the paths.

    Each file is replaced atomically, so a reader (or a run stopped midway)
    sees the previous complete file or the new one; ``outputs`` (see
    :func:`result_outputs`) carries which of them this run wrote, across calls.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    if outputs is None:
        outputs = result_outputs(out_dir, stem, append=True)
    paths = {"json": str(out_dir / f"{stem}.json"), "md": str(out_dir / f"{stem}.md")}
    _write_text(outputs[".json"], json.dumps(result, indent=1) + "\n")
    _write_text(outputs[".md"], format_report(result, markdown=True))
    if plot:
        from .plot import plot_results

        png = out_dir / f"{stem}.png"
        message = plot_results(result, png, outputs[".png"])
        if message is None:
            paths["png"] = str(png)
        else:
            paths["plot"] = message
    return paths
