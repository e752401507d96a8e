"""Pictures of a run: loss and accuracy per epoch, and a confusion matrix.

matplotlib is optional (the ``[plot]`` extra): :func:`require_matplotlib`
says how to install it, and the command line calls it before any work starts.
Figures are drawn off-screen on the Agg canvas (no display, no pyplot state)
and written atomically (:mod:`xpnet.atomic`).

An output file is "ours" when it carries a mark naming the same kind of picture
of the same checkpoint (written by :func:`save_figure`; see :func:`marker_of`):
a PNG in its ``xpnet`` text chunk, an SVG in its Dublin Core description and a
PDF in its info dictionary's Subject (``xpnet-picture: <kind> <path>``):
such a file is redrawn freely (a resumed run, ``xpnet plot`` run again), any
other existing file only with ``--overwrite`` (:func:`check_output`). A new
file is created exclusively (:class:`xpnet.atomic.OwnedOutput`): of two
processes drawing to one new name, the second is refused with one line.

Host-side edge code: it reads plain history dicts (from checkpoints, which are
untrusted: a value that is not a number is drawn as missing) and host NumPy
arrays, never a device array.
"""

from __future__ import annotations

import html
import math
import os
import re
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from . import __version__
from .atomic import OutputError, OwnedOutput, check_output_target
from .errors import XpnetError
from .terminal import printable

__all__ = [
    "INSTALL_HINT",
    "PlotError",
    "check_output",
    "confusion_figure",
    "confusion_matrix",
    "curves_figure",
    "marker_of",
    "open_output",
    "require_matplotlib",
    "save_figure",
]

INSTALL_HINT = "pip install 'xpnet[plot]'"

#: loss names as the axis label says them
LOSS_LABELS = {
    "cross-entropy": "cross-entropy",
    "CrossEntropy": "cross-entropy",
    "mse": "MSE",
    "MeanSquaredError": "MSE",
    "bce": "binary cross-entropy",
    "BinaryCrossEntropy": "binary cross-entropy",
}

#: history keys of each curve: (label, loss key, accuracy key), the first key
#: found wins (checkpoints name validation "val_*" or "validation_*")
SERIES = (
    ("train", ("loss",), ("train_accuracy", "accuracy")),
    ("validation", ("val_loss", "validation_loss"), ("val_accuracy",
                                                     "validation_accuracy")),
    ("test", ("test_loss",), ("test_accuracy",)),
)  # fmt: skip

#: cells of a confusion matrix get their count written in them up to this many
#: classes; beyond it the numbers would overlap
ANNOTATE_MAX_CLASSES = 30


class PlotError(XpnetError):
    """A picture cannot be drawn or written; the message is one line."""


def require_matplotlib(option: str = "plotting") -> None:
    """Raise :class:`PlotError` saying how to install matplotlib when it is
    missing; ``option`` names what needs it (e.g. ``"--plot"``)."""
    try:
        import matplotlib.backends.backend_agg  # noqa: F401
    except ImportError:
        raise PlotError(
            f"{option} needs matplotlib, which is not installed: {INSTALL_HINT}"
        ) from None


def _writable_suffixes() -> set[str]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    return set(FigureCanvasAgg(Figure()).get_supported_filetypes())


def marker_of(kind: str, source: str | os.PathLike | None) -> str | None:
    """The ownership mark of a ``kind`` picture of checkpoint ``source``:
    printable ASCII (a name's other bytes and characters written as escapes,
    ``caf\\udce9.npz``), so every format's metadata can hold it."""
    if source is None:
        return None
    try:
        where = Path(source).resolve()
    except (OSError, RuntimeError):  # a link loop: reading it will say so
        where = Path(os.path.abspath(source))
    mark = printable(f"{kind} {where}")  # undecodable bytes: \\udcNN escapes
    return mark.encode("ascii", "backslashreplace").decode("ascii")


def _drawable(text: str) -> str:
    """A title with its control characters and a file name's undecodable
    bytes escaped (the text renderer refuses lone surrogates); the newlines
    between its lines stay."""
    return "\n".join(printable(line) for line in text.split("\n"))


#: where SVG and PDF pictures carry the mark (their formats' own metadata)
_MARK_KEY = {"svg": "Description", "pdf": "Subject"}
_MARK_PREFIX = "xpnet-picture: "
_SVG_MARK = re.compile(
    rb"<dc:description>" + re.escape(_MARK_PREFIX.encode()) + rb"([^<]*)</dc:"
)
_PDF_MARK = re.compile(
    rb"/Subject \(" + re.escape(_MARK_PREFIX.encode()) + rb"((?:[^\\()]|\\.)*)\)"
)
_SVG_HEAD_BYTES = 1 << 14  # matplotlib writes the metadata at the top
_PDF_TAIL_BYTES = 1 << 18  # and the PDF's info dictionary at the end


def _file_marker(path: Path) -> str | None:
    """The ownership mark xpnet wrote into the picture at ``path`` (PNG, SVG
    or PDF), or None."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if head == b"\x89PNG\r\n\x1a\n":
                return _png_marker(f)
            if head.startswith(b"%PDF-"):
                size = f.seek(0, os.SEEK_END)
                f.seek(max(0, size - _PDF_TAIL_BYTES))
                found = _PDF_MARK.search(f.read())
                # PDF literal strings escape \\, ( and ) (the mark is ASCII)
                return (
                    re.sub(rb"\\(.)", rb"\1", found.group(1)).decode("ascii")
                    if found
                    else None
                )
            found = _SVG_MARK.search(head + f.read(_SVG_HEAD_BYTES))
            return html.unescape(found.group(1).decode("ascii")) if found else None
    except (OSError, UnicodeDecodeError):
        return None


def _png_marker(f: BinaryIO) -> str | None:
    """The ``xpnet`` text chunk of the PNG open as ``f`` (past its
    signature), or None."""
    # Text chunks come before the image data; stop there.
    for _ in range(64):
        head = f.read(8)
        if len(head) < 8:
            return None
        length, kind = struct.unpack(">I4s", head)
        if kind in (b"IDAT", b"IEND") or length > 1 << 16:
            return None
        data = f.read(length)
        f.read(4)  # CRC
        if kind == b"tEXt" and data.startswith(b"xpnet\0"):
            return data[len(b"xpnet\0") :].decode("latin-1")
    return None


def check_output(
    path: str | os.PathLike,
    option: str,
    *,
    overwrite: bool,
    marker: str | None = None,
) -> Path:
    """Validate an output path before any work is done; returns it.

    Refuses (one :class:`PlotError` line) a suffix matplotlib cannot write, a
    directory or anything else that is not a regular file (a FIFO would
    block), a parent that is a file, and an existing file that is not ours
    (see the module docstring) unless ``overwrite``.
    """
    require_matplotlib(option)
    where = Path(path)
    if where.is_dir():
        raise PlotError(f"{option} {str(path)!r} is a directory: give a file name")
    try:
        check_output_target(where, option)
    except OutputError as exc:
        raise PlotError(str(exc)) from None
    suffix = where.suffix.lower().lstrip(".")
    if not suffix or suffix not in _writable_suffixes():
        what = f"'.{suffix}' files" if suffix else "a file without a suffix"
        raise PlotError(
            f"{option} {str(path)!r}: matplotlib cannot write {what}; "
            "end the name in .png, .svg or .pdf"
        )
    parent = next((p for p in where.parents if p.exists()), Path("."))
    if not parent.is_dir():
        raise PlotError(
            f"{option} {str(path)!r}: {str(parent)!r} is a file, not a directory"
        )
    if where.exists() and not overwrite:
        if marker is None or _file_marker(where) != marker:
            raise PlotError(
                f"{option} {str(path)!r} already exists: replace it with "
                "--overwrite, or choose another name"
            )
    return where


def open_output(
    path: str | os.PathLike,
    option: str,
    *,
    overwrite: bool,
    marker: str | None = None,
) -> OwnedOutput:
    """:func:`check_output`, then the output to give :func:`save_figure`: an
    existing file is replaced only with ``overwrite`` or when it is ours
    (``marker``); a new one is created exclusively."""
    where = check_output(path, option, overwrite=overwrite, marker=marker)
    ours = marker is not None and where.is_file() and _file_marker(where) == marker
    return OwnedOutput(where, may_replace=overwrite or ours)


def save_figure(
    fig: Any, output: OwnedOutput | str | os.PathLike, marker: str | None = None
) -> None:
    """Write ``fig`` to ``output`` atomically in the format its suffix names;
    a PNG carries ``marker`` (see :func:`marker_of`) in a text chunk.
    ``output``: from :func:`open_output`, or a path (replaced if it exists)."""
    if not isinstance(output, OwnedOutput):
        output = OwnedOutput(output, may_replace=True)
    path = output.path
    fmt = path.suffix.lower().lstrip(".")
    # PNG takes free-form keys; SVG and PDF only their formats' own (Dublin
    # Core, the PDF info dictionary): the mark goes into one of those.
    metadata: dict[str, str] | None = None
    if fmt == "png":
        metadata = {"Software": f"xpnet {__version__}"}
        if marker is not None:
            metadata["xpnet"] = marker
    elif fmt in _MARK_KEY:
        metadata = {"Creator": f"xpnet {__version__}"}
        if marker is not None:
            metadata[_MARK_KEY[fmt]] = _MARK_PREFIX + marker
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with output.write() as handle:
            fig.savefig(handle, format=fmt, dpi=120, metadata=metadata)
    except XpnetError as exc:
        raise PlotError(str(exc)) from None
    except Exception as exc:  # matplotlib's errors are of many kinds
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise PlotError(f"cannot write {str(path)!r}: {detail}") from None


def _number(value: Any) -> float:
    """``value`` as a float, NaN (drawn as a gap) when it is not a number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return math.nan
    return float(value)


def _column(history: Sequence[dict[str, Any]], keys: Sequence[str]) -> np.ndarray:
    key = next((k for k in keys if any(k in r for r in history)), None)
    if key is None:
        return np.full(len(history), math.nan)
    return np.array([_number(r.get(key)) for r in history])


def _new_figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def curves_figure(
    history: Sequence[dict[str, Any]], *, title: str, loss: str | None = None
) -> Any:
    """Loss and accuracy per epoch of a checkpoint's ``history`` (one dict
    per epoch: ``epoch``, ``loss``, ``train_accuracy``, ``test_loss``,
    ``test_accuracy``, optionally ``val_*``); a regressor (no accuracy) gets
    the loss panel only. Accuracy is drawn in percent. Returns the Figure."""
    from matplotlib.ticker import MaxNLocator

    if not history:
        raise PlotError("the history is empty: train at least one epoch first")
    numbered = [_number(r.get("epoch")) for r in history]
    epochs = np.array(
        [e if math.isfinite(e) else i + 1 for i, e in enumerate(numbered)]
    )
    losses = [(name, _column(history, keys)) for name, keys, _ in SERIES]
    accuracies = [(name, 100 * _column(history, keys)) for name, _, keys in SERIES]
    losses = [(n, v) for n, v in losses if not np.isnan(v).all()]
    accuracies = [(n, v) for n, v in accuracies if not np.isnan(v).all()]
    panels = 1 + bool(accuracies)
    fig = _new_figure(5.0 * panels + 0.5, 4.2)
    axes = fig.subplots(1, panels, squeeze=False)[0]
    style = {"marker": "o", "markersize": 4} if len(epochs) <= 40 else {}
    colors = {"train": "C0", "validation": "C2", "test": "C1"}
    loss_label = LOSS_LABELS.get(loss or "", loss)
    panels_data = [("loss", f"loss ({loss_label})" if loss_label else "loss", losses)]
    if accuracies:
        panels_data.append(("accuracy", "accuracy (%)", accuracies))
    for ax, (what, ylabel, series) in zip(axes, panels_data, strict=True):
        for name, values in series:
            last = values[~np.isnan(values)]
            end = f" ({last[-1]:.2f}%)" if what == "accuracy" and len(last) else ""
            ax.plot(epochs, values, label=name + end, color=colors[name], **style)
        ax.set_title(what)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        if series:
            ax.legend(loc="best", fontsize=9)
    if len(epochs) == 1:
        for ax in axes:
            ax.set_xlim(epochs[0] - 1, epochs[0] + 1)
    fig.suptitle(_drawable(title), fontsize=11)
    return fig


def confusion_matrix(
    y_true: np.ndarray, y_pred: np.ndarray, num_classes: int
) -> np.ndarray:
    """Counts ``(num_classes, num_classes)``: row = true class, column =
    predicted class; labels outside ``[0, num_classes)`` are refused."""
    y_true = np.asarray(y_true, dtype=np.int64).ravel()
    y_pred = np.asarray(y_pred, dtype=np.int64).ravel()
    if y_true.shape != y_pred.shape:
        raise PlotError(
            f"{len(y_true)} true labels but {len(y_pred)} predictions: give one each"
        )
    for labels in (y_true, y_pred):
        if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
            raise PlotError(
                f"labels must lie in [0, {num_classes}), got {labels.min()} to "
                f"{labels.max()}"
            )
    flat = np.bincount(y_true * num_classes + y_pred, minlength=num_classes**2)
    return flat.reshape(num_classes, num_classes)


def confusion_figure(
    counts: np.ndarray, labels: Sequence[str] | None = None, *, title: str
) -> Any:
    """A confusion matrix of ``counts`` (from :func:`confusion_matrix`): each
    cell shows its count, its colour the share of its true class (row), and
    the title the overall accuracy. Returns the Figure."""
    counts = np.asarray(counts)
    k = counts.shape[0]
    labels = [str(x) for x in (labels if labels is not None else range(k))]
    total = int(counts.sum())
    rows = counts.sum(axis=1, keepdims=True)
    share = 100.0 * counts / np.maximum(rows, 1)
    accuracy = 100.0 * np.trace(counts) / total if total else math.nan
    side = min(max(6.0, 0.55 * k + 2.5), 24.0)
    fig = _new_figure(side + 1.2, side)
    ax = fig.subplots()
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=100)
    ticks = np.arange(k)
    tilted = max(map(len, labels)) > 3
    ax.set_xticks(
        ticks, labels, rotation=45 if tilted else 0, ha="right" if tilted else "center"
    )
    ax.set_yticks(ticks, labels)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if k <= ANNOTATE_MAX_CLASSES:
        size = 9 if k <= 12 else 7 if k <= 20 else 5
        for i in range(k):
            for j in range(k):
                ax.text(
                    j,
                    i,
                    f"{counts[i, j]:,}",
                    ha="center",
                    va="center",
                    fontsize=size,
                    color="white" if share[i, j] > 55 else "black",
                )
    bar = fig.colorbar(image, ax=ax, shrink=0.8)
    bar.set_label("share of the true class (%)")
    ax.set_title(
        f"{_drawable(title)}\naccuracy {accuracy:.2f}% "
        f"({np.trace(counts):,} of {total:,} correct); counts in cells, colour "
        "per row",
        fontsize=10,
    )
    return fig
