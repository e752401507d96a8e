"""Memory a model will take, estimated before anything is allocated.

A layer size typed by mistake (``--hidden 1000000,1000000``: a trillion
weights) would otherwise allocate for tens of seconds before failing, or swap
the machine to a halt. :func:`check_model_fits` compares what the parameters,
their gradients and the optimizer's state take with the memory of the device
the model lives on, and refuses at once with both figures.

Files are bounded too: an array header in an ``.npz`` or IDX file may declare
any shape, and a megabyte of deflated zeros can hold a gigabyte. Besides what
each reader checks the file could physically hold, no array larger than
:func:`max_array_bytes` (default :data:`DEFAULT_MAX_ARRAY_BYTES`, 512 MiB; the
environment variable ``XPNET_MAX_ARRAY_BYTES`` raises or lowers it) is read
from a file: :func:`check_array_size`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .errors import XpnetError

if TYPE_CHECKING:
    from .backend import Backend

__all__ = [
    "DEFAULT_MAX_ARRAY_BYTES",
    "MAX_ARRAY_BYTES_ENV",
    "check_array_size",
    "check_batch_fits",
    "check_model_fits",
    "check_saved_arrays_readable",
    "device_memory_bytes",
    "format_bytes",
    "max_array_bytes",
]

#: The largest array read from a file unless ``XPNET_MAX_ARRAY_BYTES`` says
#: otherwise: ten times full MNIST's training images, far below a gigabyte.
DEFAULT_MAX_ARRAY_BYTES = 512 << 20
MAX_ARRAY_BYTES_ENV = "XPNET_MAX_ARRAY_BYTES"

_ITEMSIZE = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8}


def format_bytes(n: float) -> str:
    """``n`` bytes for people: ``"3.9 GiB"``, ``"16.0 TiB"``, ``"512 bytes"``."""
    if n < 1024:
        return f"{int(n)} bytes"
    units = ("KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
    power = min(int(math.log(n, 1024)), len(units))
    return f"{n / 1024**power:.1f} {units[power - 1]}"


def _host_available_bytes() -> int:
    """The host's memory that can be had now without swapping (Linux's
    MemAvailable), else its total RAM."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def device_memory_bytes(backend: Backend) -> int | None:
    """The memory available on ``backend``'s device in bytes (for CPU
    backends the host's, as :func:`_host_available_bytes`; a GPU's total), or
    None where it cannot be told."""
    try:
        if not backend.is_gpu:
            return _host_available_bytes()
        if backend.name == "torch":
            import torch

            return int(torch.cuda.get_device_properties(backend.device).total_memory)
        if backend.name == "cupy":
            return int(backend.xp.cuda.runtime.memGetInfo()[1])
    except Exception:  # an estimate's bound is never worth a failure
        return None
    return None


def _model_bytes(sizes: Sequence[tuple[int, int]], dtype: str, slots: int) -> int:
    """:func:`check_model_fits`'s estimate, in bytes."""
    count = sum(a * b + b for a, b in sizes)
    largest = max((a * b for a, b in sizes), default=0)
    return count * _ITEMSIZE.get(dtype, 8) * (3 + slots) + 8 * largest


def check_model_fits(
    sizes: Sequence[tuple[int, int]], dtype: str, slots: int, backend: Backend
) -> None:
    """Refuse a model whose parameters cannot fit on ``backend``'s device.

    ``sizes``: each Dense layer's ``(in_features, out_features)``; ``slots``:
    the optimizer's state arrays per parameter (Adam 2, SGD with momentum 1).
    The estimate counts the parameters twice (each layer's own array, then
    the flat buffer they are copied into), their gradients, the optimizer's
    state and the float64 host draw of the largest layer's weights:
    ``count x itemsize x (3 + slots) + 8 x largest``, a lower bound of what
    training takes (activations and data come on top).
    """
    count = sum(a * b + b for a, b in sizes)
    needed = _model_bytes(sizes, dtype, slots)
    available = device_memory_bytes(backend)
    if available is None or needed <= available:
        return
    where = "the GPU has" if backend.is_gpu else "this machine has"
    what = "" if backend.is_gpu else " available"
    raise XpnetError(
        f"the model has {count:,} parameters: with their gradients and the "
        f"optimizer's state that needs at least {format_bytes(needed)} ({dtype}), but "
        f"{where} {format_bytes(available)}{what}; use smaller layers"
    )


def check_batch_fits(
    sizes: Sequence[int], batch: int, dtype: str, slots: int, backend: Backend
) -> None:
    """Refuse a training batch whose activations, with the model, cannot fit.

    ``sizes``: ``[inputs, hidden..., outputs]``; ``batch``: rows per step.
    Each layer's output is kept for the backward pass, with a gradient and an
    activation mask of the same shape: ``batch x sum(sizes) x itemsize x 3``
    bytes on top of :func:`check_model_fits`'s estimate (whose own refusal
    comes first).
    """
    pairs = list(zip(sizes, sizes[1:], strict=False))
    check_model_fits(pairs, dtype, slots, backend)
    model = _model_bytes(pairs, dtype, slots)
    activations = batch * sum(sizes) * _ITEMSIZE.get(dtype, 8) * 3
    available = device_memory_bytes(backend)
    if available is None or model + activations <= available:
        return
    where = "the GPU has" if backend.is_gpu else "this machine has"
    what = "" if backend.is_gpu else " available"
    raise XpnetError(
        f"a batch of {batch:,} rows through layers {'-'.join(map(str, sizes))} "
        f"needs at least {format_bytes(model + activations)} ({dtype}, "
        f"{format_bytes(activations)} of it activations), but {where} "
        f"{format_bytes(available)}{what}; use a smaller --batch-size or layers"
    )


def max_array_bytes() -> int:
    """The largest array (in bytes) xpnet reads from a file: the environment
    variable ``XPNET_MAX_ARRAY_BYTES`` (a whole number of bytes: ``2000000000``,
    ``2_000_000_000`` or ``2e9``), else :data:`DEFAULT_MAX_ARRAY_BYTES`."""
    text = os.environ.get(MAX_ARRAY_BYTES_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_ARRAY_BYTES
    try:
        value = int(text)
    except ValueError:
        try:  # 2e9 is a whole number too
            number = float(text)
            value = int(number) if number.is_integer() else -1
        except (ValueError, OverflowError):
            value = -1
    if value < 1:
        raise XpnetError(
            f"{MAX_ARRAY_BYTES_ENV}={text[:40]!r} is not a positive whole number "
            f"of bytes: set it like {MAX_ARRAY_BYTES_ENV}=2000000000, or unset it "
            f"for the default {DEFAULT_MAX_ARRAY_BYTES:,}"
        )
    return value


def check_array_size(nbytes: int, what: str) -> None:
    """Refuse to read ``what`` (e.g. ``"array 'x_train' of shape (n, 784)
    uint8"``), whose header declares ``nbytes`` bytes, above the limit."""
    limit = max_array_bytes()
    if nbytes > limit:
        raise XpnetError(
            f"{what} declares {nbytes:,} bytes ({format_bytes(nbytes)}), more than "
            f"the {limit:,} xpnet reads from a file; if the data is real, raise the "
            f"limit: {MAX_ARRAY_BYTES_ENV}={nbytes}"
        )


def check_saved_arrays_readable(sizes: Sequence[int], dtype: str) -> None:
    """Refuse layer ``sizes`` (``[inputs, hidden..., outputs]``) whose largest
    weight matrix a checkpoint could not be read back with (see
    :func:`max_array_bytes`): training it first would only lose the run."""
    pairs = zip(sizes, sizes[1:], strict=False)
    rows, cols = max(pairs, key=lambda pair: pair[0] * pair[1])
    nbytes = rows * cols * _ITEMSIZE.get(dtype, 8)
    limit = max_array_bytes()
    if nbytes > limit:
        raise XpnetError(
            f"the {rows}x{cols} weights of this model take {nbytes:,} bytes "
            f"({format_bytes(nbytes)}) in its checkpoint, more than the {limit:,} "
            f"xpnet reads from a file: use smaller layers, or raise the limit for "
            f"training and reading it: {MAX_ARRAY_BYTES_ENV}={nbytes}"
        )
