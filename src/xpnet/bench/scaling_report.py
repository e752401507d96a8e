"""A scaling result (``xpnet bench --ranks``) for people: its text and
markdown report and its figure (matplotlib).

The figure has one column per model (samples/s against batch size for every
set-up; the parallel efficiency ``t1 / (N tN)`` and the N ranks' speed over
one process with N threads; where the N-rank epoch goes) and a last column
with the all-reduce time per step against the bytes moved.
"""

from __future__ import annotations

from typing import Any

from .plan import MODELS

Row = dict[str, Any]

BREAKDOWN_PARTS = ("compute", "allreduce", "wait")
BREAKDOWN_LABELS = {"compute": "compute", "allreduce": "all-reduce", "wait": "wait"}


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _groups(result: dict[str, Any]) -> list[tuple[tuple[str, int], list[Row]]]:
    found: dict[tuple[str, int], list[Row]] = {}
    for row in result["rows"]:
        found.setdefault((row["model"], row["rows"]), []).append(row)
    return [(k, sorted(v, key=lambda r: r["batch_size"])) for k, v in found.items()]


def _widest(row: Row) -> str | None:
    """The set-up with the most ranks and one all-reduce per step (the one
    broken down), if any has > 1."""
    ranked = [
        (e["world_size"], name)
        for name, e in row["systems"].items()
        if not name.endswith("-overlap")
    ]
    n, name = max(ranked)
    return name if n > 1 else None


def table(rows: list[Row], markdown: bool = False) -> str:
    """One model's rows: times, samples/s, efficiencies, the breakdown and
    the all-reduce of the set-up with the most ranks."""
    names = list(rows[0]["systems"])
    parallel = list(rows[0]["efficiency"])
    widest = _widest(rows[0])
    head = ["batch", "steps"] + [f"{n} s" for n in names]
    head += [f"{n} samples/s" for n in names]
    head += [f"eff. {n}" for n in parallel]
    head += [f"{n} vs threads" for n in parallel if rows[0]["ranks_over_threads"]]
    saving = list(rows[0].get("overlap_saves", {}))
    head += [f"{n} saves" for n in saving]
    if widest:
        head += [f"{widest}: {BREAKDOWN_LABELS[p]} s" for p in BREAKDOWN_PARTS]
        head += ["all-reduce ms/step (timer)", "alone", "kB/step"]
    cells = []
    for r in rows:
        s = r["systems"]
        c = [str(r["batch_size"]) + ("*" if r.get("contended") else "")]
        c.append(str(r["steps_per_epoch"]))
        c += [_fmt(s[n]["median_s"], ".3f") for n in names]
        c += [_fmt(s[n]["samples_per_s"], ",.0f") for n in names]
        c += [_fmt(r["efficiency"].get(n), ".2f") for n in parallel]
        if rows[0]["ranks_over_threads"]:
            c += [_fmt(r["ranks_over_threads"].get(n), ".2f") for n in parallel]
        c += [_fmt(100 * r["overlap_saves"][n], ".1f") + "%" for n in saving]
        if widest:
            b = s[widest]["breakdown_s"]
            c += [_fmt(b[p], ".3f") for p in BREAKDOWN_PARTS]
            a = s[widest].get("allreduce") or {}
            c.append(_fmt(_ms(a.get("timer_s_per_step")), ".2f"))
            c.append(_fmt(_ms(a.get("alone_s_per_step")), ".2f"))
            nbytes = a.get("bytes_per_step")
            c.append(_fmt(nbytes / 1e3 if nbytes else None, ",.0f"))
        cells.append(c)
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
        return "\n".join(lines + ["| " + " | ".join(c) + " |" for c in cells])
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(head)]
    return "\n".join(
        "  ".join(v.rjust(w) for v, w in zip(line, widths, strict=True))
        for line in [head, *cells]
    )


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1e3


def sweep_table(result: dict[str, Any]) -> list[str]:
    """The all-reduce sweep of each job as lines: bytes, ms, GB/s."""
    out = []
    for name, points in result.get("allreduce_sweep", {}).items():
        text = ", ".join(
            f"{p['bytes'] / 1e3:,.0f} kB {p['s'] * 1e3:.3f} ms"
            f" ({p['bytes'] / p['s'] / 1e9:.2f} GB/s)"
            for p in points
        )
        out.append(f"all-reduce alone, {name}: {text}")
    return out


def header_lines(result: dict[str, Any]) -> list[str]:
    cfg, env = result["config"], result["environment"]
    setups = "; ".join(
        f"{name} = {s['ranks']} rank(s) x {s['threads_per_rank']} BLAS thread(s)"
        + (", all-reduce overlapped with backward" if s.get("overlap") else "")
        + (f" (threadpoolctl: {s['blas_threads']})" if s.get("blas_threads") else "")
        for name, s in cfg["setups"].items()
    )
    lines = [
        f"xpnet bench --ranks {','.join(map(str, cfg['ranks']))} {env['date']}, cpu",
        f"set-ups: {setups}",
        f"data: {cfg['data']}",
        f"training: SGD lr {cfg['lr']} momentum {cfg['momentum']}, {cfg['dtype']}, "
        "softmax cross-entropy, shuffle every epoch; --batch-size is the global "
        "batch, split across the ranks",
        cfg["timing"],
        cfg["isolation"],
        cfg["contention"],
        "efficiency = t1 / (N tN), t1 = 1 rank of 1 thread; 'vs threads' = one "
        "process with N threads' time / N ranks' time (above 1: ranks faster); "
        "'saves' = 1 - overlapped time / one-call time",
        cfg["breakdown"],
    ]
    if cfg.get("note"):
        lines.append(f"note: {cfg['note']}")
    lines.append(
        f"machine: {env.get('cpu_model')}, {env.get('cpu_affinity')} CPU threads; "
        f"numpy BLAS: {env.get('numpy_blas', '?')}; versions: "
        + ", ".join(f"{k} {v}" for k, v in env.get("versions", {}).items() if v)
    )
    return lines


def format_scaling_report(result: dict[str, Any], markdown: bool = False) -> str:
    """The whole report: header, one table per model, the sweep, remarks."""
    out = []
    if markdown:
        out.append(
            f"# xpnet scaling benchmark: cpu, {result['environment']['date'][:10]}\n"
        )
        out += [f"- {line}" for line in header_lines(result)]
    else:
        out += header_lines(result)
    out.append("")
    for (model, rows), group in _groups(result):
        sizes = "-".join(str(s) for s in MODELS.get(model, ()))
        title = f"{model} ({sizes}), {rows:,} rows per epoch"
        out.append(f"## {title}\n" if markdown else title)
        out.append(table(group, markdown=markdown))
        out.append("")
    for line in sweep_table(result) + result.get("remarks", []):
        out.append(f"- {line}" if markdown else line)
    return "\n".join(out).rstrip() + "\n"


def scaling_figure(result: dict[str, Any]) -> Any:
    """The matplotlib Figure of a scaling ``result`` (which has rows)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from .plot import _batch_axis, _plain_log_axis

    found = _groups(result)
    fig = Figure(figsize=(4.2 * (len(found) + 1), 9.5), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(3, len(found) + 1, squeeze=False)
    names = list(result["config"]["setups"])
    colors = {n: f"C{i}" for i, n in enumerate(names)}
    for col, ((model, rows), group) in enumerate(found):
        batches = [r["batch_size"] for r in group]
        top, mid, low = axes[0][col], axes[1][col], axes[2][col]
        for name in names:
            top.plot(
                batches,
                [r["systems"][name]["samples_per_s"] for r in group],
                marker="o",
                markersize=4,
                color=colors[name],
                label=name,
            )
        for name in group[0]["efficiency"]:
            mid.plot(
                batches,
                [r["efficiency"][name] for r in group],
                marker="o",
                markersize=4,
                color=colors[name],
                label=f"efficiency {name}",
            )
            if group[0]["ranks_over_threads"]:
                mid.plot(
                    batches,
                    [r["ranks_over_threads"][name] for r in group],
                    "--",
                    marker="s",
                    markersize=4,
                    color=colors[name],
                    label=f"{name} vs threads",
                )
        widest = _widest(group[0])
        if widest:
            bottom = [0.0] * len(group)
            for i, part in enumerate(BREAKDOWN_PARTS):
                seconds = [r["systems"][widest]["breakdown_s"][part] for r in group]
                low.bar(
                    range(len(group)),
                    seconds,
                    bottom=bottom,
                    color=f"C{i + 4}",
                    label=BREAKDOWN_LABELS[part],
                )
                bottom = [a + b for a, b in zip(bottom, seconds, strict=True)]
            low.set_xticks(range(len(group)), [str(b) for b in batches], fontsize=8)
            low.set_title(f"{widest}: seconds per epoch", fontsize=9)
            low.legend(fontsize=8)
        low.set_xlabel("batch size")
        sizes = "-".join(map(str, MODELS.get(model, ())))
        top.set_title(f"{model} ({sizes}), {rows:,} rows", fontsize=10)
        top.set_yscale("log")
        _plain_log_axis(top.yaxis)
        for ax in (top, mid):
            _batch_axis(ax, batches)
            ax.grid(True, which="both", alpha=0.3)
        mid.axhline(1.0, color="0.3", linewidth=1)
        mid.set_ylim(bottom=0)
        top.legend(fontsize=8)
        mid.legend(fontsize=8)
    axes[0][0].set_ylabel("samples per second")
    axes[1][0].set_ylabel("t1 / (N tN); threads time / ranks time")
    axes[2][0].set_ylabel("seconds per epoch")
    _allreduce_panel(axes[0][-1], result, colors)
    axes[1][-1].set_visible(False)
    axes[2][-1].set_visible(False)
    fig.suptitle(
        f"xpnet data-parallel scaling on the CPU "
        f"({result['environment']['date'][:10]})",
        fontsize=11,
    )
    return fig


def _allreduce_panel(ax: Any, result: dict[str, Any], colors: dict[str, str]) -> None:
    """All-reduce seconds per step against bytes: the sweep (alone) and each
    row's timer (waiting included)."""
    for name, points in result.get("allreduce_sweep", {}).items():
        ax.plot(
            [p["bytes"] for p in points],
            [p["s"] * 1e3 for p in points],
            marker="o",
            markersize=3,
            color=colors.get(name, "C0"),
            label=f"{name}: alone (after a barrier)",
        )
    for i, row in enumerate(result["rows"]):
        for name, entry in row["systems"].items():
            a = entry.get("allreduce")
            if not a:
                continue
            ax.plot(
                [a["bytes_per_step"]],
                [a["timer_s_per_step"] * 1e3],
                "x",
                color=colors.get(name, "C0"),
                label=f"{name}: in the steps (timer)" if i == 0 else None,
            )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("bytes per all-reduce")
    ax.set_ylabel("ms per all-reduce")
    ax.set_title("all-reduce time against bytes moved", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
