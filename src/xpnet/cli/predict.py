"""``xpnet predict``: classify images, arrays or dataset samples."""

from __future__ import annotations

import argparse
import functools
from pathlib import Path
from typing import Any

import numpy as np

from ..checkpoint import Checkpoint
from ..errors import XpnetError
from ..images import IMAGE_SUFFIXES, layout_for, read_image
from ..npz import ArrayTooLarge, check_npy_size
from ..terminal import printable
from .common import UsageError, device_facts, print_json
from .evaluate import load_for_inference


@functools.lru_cache(maxsize=4)
def _dataset_once(name: str, data_dir: str | None):
    """A dataset read once per process, however many inputs index into it."""
    from ..datasets import load_dataset

    return load_dataset(name, data_dir, test_only=True)


def _read_input(
    text: str, ckpt: Checkpoint, data_dir: str | None, features: int
) -> tuple[np.ndarray, int | None]:
    """One predict argument as ``(samples (n, features), true label or None)``.

    The samples keep the unit they came in (uint8 pixels from images and
    datasets, a .npy file's own dtype): :func:`_prepare_inputs` tells them apart.
    """
    path = Path(text)
    if (
        not path.exists()
        and ":" in text
        and not text.lower().endswith((".npy", *IMAGE_SUFFIXES))
    ):
        name, _, index = text.rpartition(":")
        if not index.isdigit():
            raise UsageError(
                f"{text!r}: expected DATASET:INDEX with a number after "
                "the colon, e.g. mnist-sample:7"
            )
        data = _dataset_once(name, data_dir)
        i = int(index)
        if i >= len(data.x_test):
            raise UsageError(
                f"{text!r}: index {i} is past the end of the "
                f"{len(data.x_test):,}-image test set of {data.name}"
            )
        label = int(data.y_test[i])
        model = ckpt.model
        classes = max(model.out_features, 2)
        if getattr(model, "task", None) != "regression" and label >= classes:
            raise UsageError(
                f"{text!r} is labelled {label}, but the model knows {classes} "
                f"classes (0-{classes - 1}): {data.name} is not the data it was "
                "trained for"
            )
        return data.x_test[i : i + 1], label
    if not path.is_file():
        raise UsageError(f"input {text!r} is neither a file nor DATASET:INDEX")
    # Only a model trained on images takes an (h, w) sample; a checkpoint
    # without dataset facts (saved by the library) is taken as MNIST's if its
    # input size says so.
    image_shape = ckpt.dataset.get(
        "image_shape", (28, 28) if features == 28 * 28 else None
    )
    shape = tuple(image_shape or (features,))
    if path.suffix.lower() != ".npy":
        layout = layout_for(ckpt.dataset, features)
        image = read_image(path, tuple(image_shape or (28, 28)), layout)
        return image.reshape(1, -1), None
    try:
        check_npy_size(path)  # before numpy.load allocates what it declares
        x = np.load(path, allow_pickle=False)
    except ArrayTooLarge as exc:
        raise UsageError(f"{text!r}: {exc}") from None
    except (ValueError, OSError, EOFError) as exc:
        raise UsageError(f"{text!r} is not a readable .npy file ({exc})") from None
    if not isinstance(x, np.ndarray):  # np.load gives an NpzFile for a .npz
        x.close()
        raise UsageError(f"{text!r} is an .npz archive, not a .npy array")
    if x.size == 0:
        raise UsageError(
            f"{text!r} holds no samples (an array of shape {x.shape}): give at "
            "least one"
        )
    # One sample (h, w) or (features,), or a batch (n, h, w) or (n, features).
    if x.shape in (shape, (features,)):
        return x.reshape(1, -1), None
    if x.ndim in (2, 3) and x.shape[1:] in (shape, (features,)):
        return x.reshape(len(x), -1), None
    if image_shape is None:
        raise UsageError(
            f"{text!r} holds an array of shape {x.shape}; the model expects "
            f"({features},) or n samples: (n, {features})"
        )
    h, w = shape
    raise UsageError(
        f"{text!r} holds an array of shape {x.shape}; the model expects a {h}x{w} "
        f"image ({h}, {w}) or ({features},), or n of them: (n, {h}, {w}) or "
        f"(n, {features})"
    )


def _prepare_inputs(x: np.ndarray, ckpt: Checkpoint, text: str) -> np.ndarray:
    """Apply the checkpoint's preprocessing (deskew, scale, standardise) to ``x``.

    For a model trained on scaled pixels, ``x`` may hold raw pixels 0-255 or
    floats already in [0, 1] (see :func:`xpnet.preprocessing.transform`).
    """
    try:
        return ckpt.preprocessing.apply(x, ckpt.model.dtype_name)
    except XpnetError as exc:
        raise UsageError(f"input {text!r}: {exc}") from None


def _refuse_swapped_arguments(args: argparse.Namespace) -> None:
    """``xpnet predict digit.png run.npz``: say the order, rather than call
    the picture a corrupt checkpoint."""
    first = str(args.model)
    if first.lower().endswith((".npy", *IMAGE_SUFFIXES)):
        models = [t for t in args.inputs if str(t).lower().endswith(".npz")]
        example = f"xpnet predict {models[0] if models else 'MODEL.npz'} {first}"
        raise UsageError(
            f"{first!r} is an input, not a checkpoint: the checkpoint comes "
            f"first ({example})"
        )


def run(args: argparse.Namespace) -> int:
    _refuse_swapped_arguments(args)
    ckpt, backend = load_for_inference(args)
    model = ckpt.model
    names = ckpt.dataset.get("class_names")
    results: list[dict[str, Any]] = []
    for text in args.inputs:
        raw, truth = _read_input(text, ckpt, args.data_dir, model.in_features)
        if raw.shape[1] != model.in_features:  # a dataset with other features
            raise UsageError(
                f"input {text!r} has {raw.shape[1]} values per sample, "
                f"the model expects {model.in_features}"
            )
        x = _prepare_inputs(raw, ckpt, text)
        try:
            answers = (
                model.predict(x)
                if model.task == "regression"
                else model.predict_proba(x)
            )
        except XpnetError as exc:
            raise UsageError(f"input {text!r}: {exc}") from None
        if model.task == "regression":
            for row_index, values in enumerate(np.reshape(answers, (len(x), -1))):
                item = {
                    "input": text if len(x) == 1 else f"{text}[{row_index}]",
                    "values": [float(v) for v in values],
                }
                results.append(item)
                if not args.json:
                    shown = "  ".join(f"{v:.6g}" for v in values)
                    print(printable(f"{item['input']}: {shown}"))
            continue
        probs = answers
        for row_index, p in enumerate(probs):
            label = int(np.argmax(p)) if len(p) > 1 else int(p[0] > 0.5)
            confidence = (
                float(p[label]) if len(p) > 1 else float(p[0] if label else 1 - p[0])
            )
            name = names[label] if names and label < len(names) else str(label)
            item = {
                "input": text if len(probs) == 1 else f"{text}[{row_index}]",
                "prediction": label,
                "class_name": name,
                "probability": confidence,
                # Full precision (the model's floats, as Python floats): what
                # other runtimes (e.g. an ONNX export) are compared with.
                "probabilities": [float(v) for v in p],
                "true_label": truth,
            }
            results.append(item)
            if not args.json:
                article = "an" if name[:1].lower() in "aeiou8" else "a"
                verdict = (
                    f"{item['input']}: looks like {article} {name}, p={confidence:.2f}"
                )
                if truth is not None:
                    verdict += f" (true label: {names[truth] if names else truth})"
                print(printable(verdict))
                print(
                    printable(
                        "  "
                        + "  ".join(
                            f"{names[k] if names else k}: {v:.3f}"
                            for k, v in enumerate(p)
                        )
                    )
                )
    if args.json:
        print_json(
            {
                "command": "predict",
                "model": args.model,
                "device": device_facts(backend),
                "results": results,
            }
        )
    return 0
