"""``xpnet evaluate``: a checkpoint's loss and accuracy on its test set."""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from .. import figures
from ..atomic import OwnedOutput
from ..backend import Backend, resolve
from ..checkpoint import Checkpoint
from ..datasets import Dataset
from ..errors import XpnetError
from ..terminal import printable
from .common import (
    UsageError,
    check_features,
    device_facts,
    load_training_data,
    print_json,
    targets_of,
)
from .plot import CONFUSION, run_title


def load_for_inference(args: argparse.Namespace) -> tuple[Checkpoint, Backend]:
    """The checkpoint named by ``args.model`` on the requested device."""
    backend = resolve(args.device, args.backend)
    ckpt = Checkpoint.from_file(args.model, backend)
    # Never assume "none": raw pixels into a model trained on pixels / 255
    # answer with confidence and exit 0.
    ckpt.preprocessing.require_known(f"checkpoint {args.model!r}")
    return ckpt, backend


def data_for_checkpoint(
    ckpt: Checkpoint, name: str | None, data_dir: str | None
) -> Dataset:
    """The checkpoint's dataset (or ``name``), preprocessed as in training."""
    name = name or ckpt.options.get("dataset") or ckpt.dataset.get("name")
    if not name:
        raise UsageError("the checkpoint does not name its dataset: pass --dataset")
    data = load_training_data(
        name,
        data_dir,
        steps=ckpt.preprocessing,
        dtype=ckpt.model.dtype_name,
        test_only=True,
        targets=targets_of(ckpt.model),
    )
    if not len(data.x_test):
        raise UsageError(
            f"dataset {name!r} has no test set to evaluate on: pass one with "
            "--dataset (IDX files: IMAGES,LABELS,TEST_IMAGES,TEST_LABELS)"
        )
    return data


def changed_test_data(ckpt: Checkpoint, data: Dataset, given: str | None) -> str | None:
    """What changed in the checkpoint's own test set since training (a
    bring-your-own file replaced in place), in words, or None. Another
    dataset named with ``--dataset`` is evaluated as asked."""
    from ..fingerprint import TEST, changes
    from .resume import dataset_identity

    recorded = ckpt.options.get("dataset")
    if given is not None and dataset_identity(given) != recorded:
        return None
    found = changes(ckpt.dataset.get("fingerprint"), data.fingerprint, TEST)
    if found is None:
        return None
    return (
        f"dataset {data.name!r} is not the test set the checkpoint was evaluated "
        f"on in training: {found}"
    )


def run(args: argparse.Namespace) -> int:
    marker = figures.marker_of(CONFUSION, args.model)
    plot = (
        figures.open_output(
            args.plot, "--plot", overwrite=args.overwrite, marker=marker
        )
        if args.plot
        else None
    )
    ckpt, backend = load_for_inference(args)
    model = ckpt.model
    if plot is not None and model.task == "regression":
        raise UsageError(
            f"--plot draws a confusion matrix, and {args.model!r} is a regressor "
            "(trained on float targets): drop --plot"
        )
    data = data_for_checkpoint(ckpt, args.dataset, args.data_dir)
    check_features(model, data, f"checkpoint {args.model!r}")
    changed = changed_test_data(ckpt, data, args.dataset)
    if changed:
        print(f"xpnet: warning: {changed}", file=sys.stderr, flush=True)
    start = time.perf_counter()
    try:
        result = model.evaluate(data.x_test, data.y_test)
    except XpnetError as exc:
        raise UsageError(f"checkpoint {args.model!r} on {data.name}: {exc}") from None
    seconds = time.perf_counter() - start
    if plot is not None:
        _draw_confusion(plot, marker, ckpt, data, args.model)
    if args.json:
        print_json(
            {
                "command": "evaluate",
                "model": args.model,
                "dataset": data.name,
                "samples": len(data.x_test),
                "device": device_facts(backend),
                "seconds": seconds,
                **({"dataset_changed": changed} if changed else {}),
                **result,
                **({"plot": str(plot.path)} if plot is not None else {}),
            }
        )
    else:
        acc = result["accuracy"]
        print(
            printable(
                f"{data.name} test set: "
                + (f"accuracy {100 * acc:.2f}%, " if acc is not None else "")
                + f"loss {result['loss']:.4f} ({len(data.x_test):,} samples, "
                f"{seconds:.2f} s, {backend.describe()})"
            )
        )
        if plot is not None:
            print(printable(f"plotted {plot.path}"))
    return 0


def _draw_confusion(
    output: OwnedOutput,
    marker: str | None,
    ckpt: Checkpoint,
    data: Dataset,
    source: str,
) -> None:
    """The test set's confusion matrix of ``ckpt``'s model, written to ``output``."""
    model = ckpt.model
    k = max(int(data.num_classes), 2)
    counts = figures.confusion_matrix(
        np.asarray(data.y_test), model.predict(data.x_test), k
    )
    names = data.class_names if data.class_names else None
    title = run_title(source, model, ckpt.options, {})
    figures.save_figure(
        figures.confusion_figure(counts, names, title=f"{title}\n{data.name} test set"),
        output,
        marker,
    )
