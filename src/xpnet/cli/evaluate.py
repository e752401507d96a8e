"""``xpnet evaluate``: a checkpoint's loss and accuracy on its test set."""

from __future__ import annotations

import argparse
import time

from ..backend import Backend, resolve
from ..checkpoint import Checkpoint
from ..datasets import Dataset
from .common import (
    UsageError,
    check_features,
    device_facts,
    load_training_data,
    print_json,
)


def load_for_inference(args: argparse.Namespace) -> tuple[Checkpoint, Backend]:
    """The checkpoint named by ``args.model`` on the requested device."""
    backend = resolve(args.device, args.backend)
    return Checkpoint.from_file(args.model, backend), backend


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
    )
    if not len(data.x_test):
        raise UsageError(
            f"dataset {name!r} has no test set to evaluate on: pass one with "
            "--dataset (IDX files: IMAGES,LABELS,TEST_IMAGES,TEST_LABELS)"
        )
    return data


def run(args: argparse.Namespace) -> int:
    ckpt, backend = load_for_inference(args)
    model = ckpt.model
    data = data_for_checkpoint(ckpt, args.dataset, args.data_dir)
    check_features(model, data, f"checkpoint {args.model!r}")
    start = time.perf_counter()
    result = model.evaluate(data.x_test, data.y_test)
    seconds = time.perf_counter() - start
    if args.json:
        print_json(
            {
                "command": "evaluate",
                "model": args.model,
                "dataset": data.name,
                "samples": len(data.x_test),
                "device": device_facts(backend),
                "seconds": seconds,
                **result,
            }
        )
    else:
        acc = result["accuracy"]
        print(
            f"{data.name} test set: "
            + (f"accuracy {100 * acc:.2f}%, " if acc is not None else "")
            + f"loss {result['loss']:.4f} ({len(data.x_test):,} samples, "
            f"{seconds:.2f} s, {backend.describe()})"
        )
    return 0
