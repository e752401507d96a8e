"""The results as a picture (matplotlib, optional): one column per model; the
top row is seconds per epoch against batch size (log-log, each panel its own
scale, since the models differ by 1000x), the bottom row xpnet's time over
each peer's, on one y-axis shared by all panels, since ratios compare.

Ticks are plain numbers (32, 64, ...; 0.2, 0.5, 1, 2, ...), never powers
like ``6x10^-1``; one colour per system in every panel, one legend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..atomic import OwnedOutput
from .plan import MODELS, SCALING_SCHEMA, SYSTEMS
from .report import groups
from .results import RATIO_KEYS


def _plain(value: float, _pos: Any = None) -> str:
    """A tick label without exponents: 32, 0.2, 1,024."""
    if value >= 1000:
        return f"{value:,.0f}"
    return f"{value:g}"


def _plain_log_axis(axis: Any, subs: tuple[float, ...] = (1.0, 2.0, 5.0)) -> None:
    """Major ticks at 1, 2, 5 x 10^k labelled as plain numbers; no minor labels."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(base=10, subs=subs))
    axis.set_major_formatter(FuncFormatter(_plain))
    axis.set_minor_formatter(NullFormatter())


def _batch_axis(ax: Any, batches: list[int]) -> None:
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(batches))
    ax.xaxis.set_major_formatter(FuncFormatter(_plain))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.tick_params(axis="x", labelsize=8)


def _title(result: dict[str, Any], rows: int | None) -> str:
    devices = ", ".join(result.get("config", {}).get("devices", []))
    date = str(result.get("environment", {}).get("date", ""))[:10]
    where = ", ".join(x for x in (devices, date) if x)
    epoch = f"one epoch of {rows:,} rows" if rows else "one epoch"
    return f"xpnet vs peers: {epoch}" + (f" ({where})" if where else "")


def plot_results(
    result: dict[str, Any], path: Path, output: OwnedOutput | None = None
) -> str | None:
    """Draw ``result`` to ``path`` (PNG, atomically, through ``output`` when
    given: see :func:`~xpnet.bench.report.result_outputs`); None when written,
    else the reason it was skipped."""
    try:
        import matplotlib.backends.backend_agg  # noqa: F401
    except Exception:
        return "plot: skipped (matplotlib not installed)"
    if not result.get("rows"):
        return "plot: skipped (no rows yet)"
    if result.get("schema") == SCALING_SCHEMA:
        from .scaling_report import scaling_figure

        fig = scaling_figure(result)
    else:
        fig = results_figure(result)
    if output is None:
        output = OwnedOutput(path, may_replace=True, follow_links=False)
    with output.write() as f:
        fig.savefig(f, format="png", dpi=110)
    return None


def results_figure(result: dict[str, Any]) -> Any:
    """The matplotlib Figure of ``result`` (which has rows)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    found = groups(result)
    models = list(dict.fromkeys(k[0] for k, _ in found))
    devices = {k[1] for k, _ in found}
    # The largest epoch is the main one (solid lines, no label suffix); models
    # timed on fewer rows are dashed and say so.
    main_rows = max(k[2] for k, _ in found)
    one_size = len({k[2] for k, _ in found}) == 1
    has_ratios = any(
        r.get(key) is not None
        for _, g in found
        for r in g
        for key in RATIO_KEYS.values()
    )
    nrows = 2 if has_ratios else 1
    fig = Figure(
        figsize=(4.2 * len(models) + 0.6, 3.4 * nrows + 0.9), layout="constrained"
    )
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, len(models), squeeze=False, sharex="col")
    if has_ratios:
        # Ratios compare across models: one y scale for the whole row.
        for ax in axes[1][1:]:
            ax.sharey(axes[1][0])
    colors = {s: f"C{i}" for i, s in enumerate(SYSTEMS)}
    handles: dict[str, Any] = {}
    for col, model in enumerate(models):
        top = axes[0][col]
        batches: set[int] = set()
        for (m, device, rows), group in found:
            if m != model:
                continue
            style = "-" if rows == main_rows else "--"
            suffix = (f" {device}" if len(devices) > 1 else "") + (
                f" ({rows:,} rows)" if rows != main_rows else ""
            )
            batches |= {r["batch_size"] for r in group}
            for system in SYSTEMS:
                pts = [
                    (r["batch_size"], r["systems"][system]["median_s"])
                    for r in group
                    if system in r["systems"]
                ]
                if not pts:
                    continue
                xs, ys = zip(*pts, strict=True)
                (line,) = top.plot(
                    xs,
                    ys,
                    style,
                    marker="o",
                    markersize=4,
                    color=colors[system],
                    label=system + suffix,
                )
                handles.setdefault(system + suffix, line)
                if not has_ratios or system not in RATIO_KEYS:
                    continue
                ratio = [
                    (r["batch_size"], r[RATIO_KEYS[system]])
                    for r in group
                    if r.get(RATIO_KEYS[system]) is not None
                ]
                if ratio:
                    xs, ys = zip(*ratio, strict=True)
                    axes[1][col].plot(
                        xs, ys, style, marker="o", markersize=4, color=colors[system]
                    )
        sizes = "-".join(map(str, MODELS.get(model, ())))
        top.set_title(f"{model} ({sizes})" if sizes else model, fontsize=10)
        top.set_yscale("log")
        _plain_log_axis(top.yaxis)
        top.grid(True, which="both", alpha=0.3)
        for row in axes[:, col]:
            _batch_axis(row, sorted(batches))
        axes[-1][col].set_xlabel("batch size")
        if has_ratios:
            bottom = axes[1][col]
            bottom.set_yscale("log", base=2)
            _plain_log_axis(bottom.yaxis, subs=(1.0, 1.2, 1.5, 2.0, 3.0, 5.0, 7.0))
            bottom.axhline(1.0, color="0.3", linewidth=1)
            bottom.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("seconds per epoch")
    if has_ratios:
        axes[1][0].set_ylabel("xpnet time / peer time\n(below 1: xpnet faster)")
    fig.legend(
        list(handles.values()),
        list(handles),
        loc="outside lower center",
        ncols=min(len(handles), 6),
        fontsize=9,
        frameon=False,
    )
    fig.suptitle(_title(result, main_rows if one_size else None), fontsize=11)
    return fig
