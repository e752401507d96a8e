"""The results as a picture: log-log seconds per epoch against batch size, one
panel per model (matplotlib, optional)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..atomic import atomic_write
from .plan import MODELS, ROWS
from .report import groups


def plot_results(result: dict[str, Any], path: Path) -> str | None:
    """Log-log epoch time vs batch size, a subplot per model; None when written,
    else the reason it was skipped."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception:
        return "plot: skipped (matplotlib not installed)"
    found = groups(result)
    if not found:
        return "plot: skipped (no rows yet)"
    models = list(dict.fromkeys(k[0] for k, _ in found))
    fig, axes = plt.subplots(
        1, len(models), figsize=(5 * len(models), 4), squeeze=False
    )
    for ax, model in zip(axes[0], models, strict=True):
        for (m, device, rows), group in found:
            if m != model:
                continue
            systems = list(dict.fromkeys(s for r in group for s in r["systems"]))
            for system in systems:
                pts = [
                    (r["batch_size"], r["systems"][system]["median_s"])
                    for r in group
                    if system in r["systems"]
                ]
                xs, ys = zip(*pts, strict=True)
                label = f"{system} {device}" + (
                    f" ({rows:,} rows)" if rows != ROWS else ""
                )
                ax.plot(xs, ys, marker="o", label=label)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(f"{model} {'-'.join(map(str, MODELS.get(model, ())))}")
        ax.set_xlabel("batch size")
        ax.set_ylabel("seconds per epoch")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{result['config']['data']}; SGD momentum 0.9, float32", fontsize=9)
    fig.tight_layout()
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
    return None
