"""The argument types and choices of the command line's options (argparse
``type=`` functions: one-line errors naming what was expected)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..rng import MAX_SEED

DEFAULT_LR = {"sgd": 0.1, "adam": 0.001, "adamw": 0.001}

LOSS_CHOICES = ("cross-entropy", "mse", "bce")

ACTIVATION_CHOICES = (
    "relu",
    "leaky-relu",
    "sigmoid",
    "tanh",
    "gelu",
    "elu",
    "softplus",
    "silu",
)

# Heads that make sense after the last layer: none (logits), or a mapping into
# [0, 1] for --loss mse (the fused losses refuse them: see cli/train.py).
OUTPUT_ACTIVATION_CHOICES = ("identity", "sigmoid", "softmax")

INIT_CHOICES = ("auto", "he-normal", "he-uniform", "glorot-normal", "glorot-uniform")


def hidden_sizes(text: str) -> list[int]:
    if text.strip() in ("", "none"):
        return []
    try:
        sizes = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated layer widths such as 512,512, got {text!r}"
        ) from None
    if any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError(f"layer widths must be positive, got {text!r}")
    return sizes


def number(
    cast: Callable[[str], Any], ok: Callable[[Any], bool], expected: str
) -> Callable[[str], Any]:
    """An argparse ``type``: ``cast(text)`` where ``ok`` accepts it, else the
    one-line error ``expected.format(text=text)``."""

    def parse(text: str) -> Any:
        try:
            value = cast(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(expected.format(text=text))
        return value

    return parse


positive_int = number(
    int, lambda v: v >= 1, "expected a positive integer, got {text!r}"
)
non_negative_int = number(
    int, lambda v: v >= 0, "expected a non-negative integer, got {text!r}"
)
seed = number(
    int,
    lambda v: 0 <= v <= MAX_SEED,
    "expected a whole number from 0 to 2**128 (the range a checkpoint records), "
    "got {text!r}",
)
non_negative_float = number(
    float, lambda v: 0 <= v < math.inf, "expected a non-negative number, got {text!r}"
)
positive_float = number(
    float, lambda v: 0 < v < math.inf, "expected a positive number, got {text!r}"
)
fraction = number(
    float,
    lambda v: 0 < v < 1,
    "expected a fraction between 0 and 1 (e.g. 0.1), got {text!r}",
)
thread_count = number(
    int, lambda v: v >= 1, "{text!r} is neither auto nor a whole number of threads >= 1"
)


def blas_threads(text: str) -> int | str:
    """``--blas-threads``: ``auto`` or a whole number of threads >= 1."""
    return text if text == "auto" else thread_count(text)


def data_dir(text: str) -> str:
    """``--data-dir``: a folder (made on first download) or a name not yet
    taken; an existing file is refused, since the cache would be looked up
    inside it (``FILE/mnist``)."""
    path = Path(text).expanduser()
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(
            f"{text!r} is a file, not a folder: --data-dir names the folder that "
            "caches mnist and fashion-mnist (an .npz dataset goes to --dataset)"
        )
    return text
