"""The benchmark's training data: real MNIST pixels, or learnable synthetic blobs.

Never uniform noise: on data with no structure ReLUs die, momentum buffers
decay into float denormals and the benchmark would time denormal arithmetic
instead of training.
"""

from __future__ import annotations

import numpy as np

from ..errors import XpnetError
from .plan import CLASSES, ROWS, SEED

REAL_DATA_TEXT = "real MNIST (15k images tiled to {rows:,})"
SYNTHETIC_TEXT = (
    "synthetic (10 class-dependent Gaussian blobs in 784-d, {rows:,} rows; "
    "not real MNIST)"
)


def load_data(
    rows: int = ROWS, synthetic: bool = False, seed: int = SEED
) -> tuple[np.ndarray, np.ndarray, str]:
    """``(X float32 (rows, 784), y int64 (rows,), description)`` on the host.

    Real data: the bundled mnist-sample's 5,000 training and 10,000 test images
    (pixels / 255) tiled to ``rows``. Synthetic: Gaussian blobs around ten class
    centres, learnable, with no denormal trap.
    """
    if rows < 1:
        raise XpnetError(f"rows must be >= 1, got {rows}")
    if synthetic:
        rng = np.random.default_rng(seed)
        centres = rng.normal(0.0, 1.0, size=(CLASSES, 784))
        y = rng.integers(0, CLASSES, size=rows).astype(np.int64)
        X = rng.standard_normal(size=(rows, 784), dtype=np.float32)
        X += centres[y].astype(np.float32)
        return X, y, SYNTHETIC_TEXT.format(rows=rows)
    from ..datasets import load_dataset

    ds = load_dataset("mnist-sample")
    images = np.concatenate([ds.x_train, ds.x_test]).reshape(-1, 784)
    labels = np.concatenate([ds.y_train, ds.y_test]).astype(np.int64)
    base = (images / np.float32(255.0)).astype(np.float32)
    idx = np.arange(rows) % len(base)
    X = np.ascontiguousarray(base[idx])
    y = labels[idx]
    text = REAL_DATA_TEXT.format(rows=rows).replace("15k", f"{len(base) // 1000}k")
    return X, y, text
