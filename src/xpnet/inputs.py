"""Data going into a model: checked, typed and moved to its device once.

``prepare_inputs``/``prepare_targets`` are what :meth:`Sequential.fit`,
``evaluate`` and ``predict`` run on the caller's arrays (and what a caller
that validates once, like the benchmark, calls itself). They also decide the
model's task from the targets: a regressor when the targets are floats and
the loss is not cross-entropy, a classifier otherwise.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import array_api_compat

from .arraytypes import Array, ArrayLike, Namespace
from .errors import XpnetError
from .losses import CrossEntropy, Loss

if TYPE_CHECKING:
    from .model import Sequential

__all__ = [
    "all_finite",
    "describe_inputs_seen",
    "dtype_kind",
    "finite",
    "inputs_seen",
    "non_finite_outputs",
    "prepare_inputs",
    "prepare_targets",
    "task_mismatch",
    "task_of",
]


def prepare_inputs(
    model: Sequential, X: ArrayLike, what: str = "X", check: bool = True
) -> Array:
    """``X`` checked (2-D, the model's feature count, finite) and on the
    model's device in its dtype; see :meth:`Sequential.prepare_inputs`."""
    shape = getattr(X, "shape", None)
    if shape is None:
        X = model.backend.asarray(X)
        shape = X.shape
    if len(shape) != 2:
        raise XpnetError(
            f"{what} must be 2-D (samples, features), got shape {tuple(shape)}; "
            f"flatten images with {what}.reshape(len({what}), -1)"
        )
    if shape[0] == 0:
        raise XpnetError(f"{what} is empty (0 samples): pass at least one sample")
    _refuse_complex(X, what)
    if shape[1] != model.in_features:
        raise XpnetError(
            f"{what} has {shape[1]} features but the model's first layer expects "
            f"{model.in_features}: build the model with in_features={shape[1]} "
            "or fix the data"
        )
    X = model.to_device(X, model.dtype_name)
    if check and not finite(model, X):
        raise XpnetError(
            f"{what} contains NaN or infinite values: clean or impute them first"
        )
    return X


def prepare_targets(
    model: Sequential,
    y: ArrayLike,
    n: int,
    what: str = "y",
    check: bool = True,
    task: str | None = None,
) -> tuple[Array, Array | None, str]:
    """``(targets on the device, integer labels for accuracy, task)``.

    The labels are None for regression and 1-column targets; the task is
    the one the targets imply (see :class:`Sequential`).

    ``task``: the task the targets must imply (``None``: any). ``check=False``
    skips the scans of the values (label range, finiteness); shapes and
    dtypes are always checked.
    """
    xp = model.xp
    shape = tuple(getattr(y, "shape", ()))
    if not shape:
        y = model.backend.asarray(y)
        shape = tuple(y.shape)
    if not shape:
        raise XpnetError(
            f"{what} must hold one target per sample, got a single value (a 0-d "
            f"array): pass an array of {n} labels or {n} rows of targets"
        )
    if shape[0] != n:
        raise XpnetError(
            f"{what} has {shape[0]} rows but X has {n}: pass one target per sample"
        )
    _refuse_complex(y, what)
    kind = dtype_kind(y)
    found = task_of(model.loss, kind)
    if task is not None and found != task:
        raise XpnetError(task_mismatch(what, task))
    if len(shape) == 1 and kind in "iub":
        y = model.to_device(y)
        y = xp.astype(y, xp.int64) if y.dtype != xp.int64 else y
        if not check:
            return y, y, found
        low, high = int(xp.min(y)), int(xp.max(y))
        classes = model.out_features if model.out_features > 1 else 2
        if low < 0 or high >= classes:
            hint = (
                ""
                if isinstance(model.loss, CrossEntropy)
                else " (for regression, pass float targets)"
            )
            raise XpnetError(
                f"{what} holds labels from {low} to {high}, outside [0, {classes}) "
                f"for a model with {model.out_features} "
                f"output{'s' * (model.out_features != 1)}: relabel the "
                f"classes as 0..K-1 or change the output size{hint}"
            )
        return y, y, found
    if len(shape) == 1 and isinstance(model.loss, CrossEntropy):
        raise XpnetError(
            f"{what} must hold integer class labels for cross-entropy, got "
            f"dtype {getattr(y, 'dtype', '?')}; convert with y.astype(int)"
        )
    expected = (n, model.out_features) if len(shape) == 2 else (n,)
    if shape != expected and not (len(shape) == 1 and model.out_features == 1):
        raise XpnetError(
            f"{what} has shape {shape} but the model outputs {(n, model.out_features)}"
        )
    y = model.to_device(y, model.dtype_name)
    if check and not finite(model, y):
        raise XpnetError(f"{what} contains NaN or infinite values")
    classify = found == "classification" and len(shape) == 2 and shape[1] > 1
    return y, (xp.argmax(y, axis=1) if classify else None), found


def inputs_seen(given: ArrayLike, X: Array, check: bool = True) -> dict[str, object]:
    """What ``fit`` saw of its inputs, recorded as ``model.inputs_seen`` so
    that a save can tell whether their preparation is known (see
    :func:`xpnet.checkpoint.stated_preprocessing`); ``given``: the caller's
    X, ``X``: it prepared (on the device). ``{"dtype": the caller's
    dtype, "integers": bool}``, plus ``"min"``/``"max"`` when ``check`` and
    ``given`` is a host NumPy array (a pass over host memory; device arrays
    are not read back for it: fit's reads stay one per epoch)."""
    seen: dict[str, object] = {
        "dtype": str(getattr(given, "dtype", type(given).__name__)),
        "integers": dtype_kind(given) in "iub",
    }
    if check and array_api_compat.is_numpy_array(given) and X.shape[0]:
        seen["min"], seen["max"] = float(given.min()), float(given.max())
    return seen


def describe_inputs_seen(seen: dict[str, object]) -> str:
    """``inputs_seen`` in words, e.g. ``"float32 values in [0, 1]"``."""
    text = f"{seen.get('dtype')} values"
    low, high = seen.get("min"), seen.get("max")
    if isinstance(low, float) and isinstance(high, float):
        text += f" in [{low:g}, {high:g}]"
    return text


def non_finite_outputs(what: str) -> str:
    """The message of a model whose answer is not a number (``what``: e.g.
    ``"loss nan"``), for models that refuse to answer with it."""
    return (
        f"the model gives {what} on these inputs, not an answer: its weights or "
        "preprocessing overflow (a diverged or damaged model), or the inputs are "
        "far outside what it was trained on"
    )


def task_of(loss: Loss, kind: str) -> str:
    """The task that targets of dtype kind ``kind`` ('f', 'i', ...) imply."""
    if kind in "iub" or isinstance(loss, CrossEntropy):
        return "classification"
    return "regression"


def finite(model: Sequential, x: Array) -> bool:
    """:func:`all_finite` on the model's backend, without NumPy's warning
    when finite values overflow the sum (the answer says what is wrong)."""
    with model.backend.quiet_float_errors():
        return all_finite(model.xp, x)


def all_finite(xp: Namespace, x: Array) -> bool:
    """Whether ``x`` holds no NaN or infinity (one read-back).

    The sum is one pass with no temporary: it is finite whenever every element
    is, unless finite values overflow it, which only then costs the full
    element-wise check.
    """
    if math.isfinite(float(xp.sum(x))):
        return True
    return bool(xp.all(xp.isfinite(x)))


def task_mismatch(what: str, task: str) -> str:
    if task == "classification":
        return (
            f"{what} holds float values but this model is a classifier (fitted on "
            "class labels): pass integer labels (y.astype(int)), or build a new "
            "model for regression"
        )
    return (
        f"{what} holds integer labels but this model is a regressor (fitted on "
        "float targets): pass float targets (y.astype(float)), or build a new "
        "model for classification"
    )


def _refuse_complex(x: ArrayLike, what: str) -> None:
    """Complex numbers would lose their imaginary parts (with at most a
    warning): say so instead."""
    if dtype_kind(x) == "c":
        raise XpnetError(
            f"{what} holds complex numbers ({getattr(x, 'dtype', 'complex')}); the "
            f"model takes real ones: pass {what}.real, or abs({what}), if that is "
            "what you mean"
        )


def dtype_kind(y: ArrayLike) -> str:
    """'f', 'i', 'u' or 'b' for any backend's array dtype (or host array-like)."""
    dtype = getattr(y, "dtype", None)
    try:
        xp = array_api_compat.array_namespace(y)
    except TypeError:
        xp = None
    if xp is not None:
        for letter, name in (
            ("c", "complex floating"),
            ("b", "bool"),
            ("u", "unsigned integer"),
            ("i", "signed integer"),
        ):
            if xp.isdtype(dtype, name):
                return letter
        return "f"
    # A foreign array-like (e.g. a pandas Series): NumPy's dtype kind if it has
    # one, else the dtype's name.
    kind = getattr(dtype, "kind", None)
    if isinstance(kind, str):
        return kind
    text = str(dtype)
    if "bool" in text:
        return "b"
    if "uint" in text:
        return "u"
    if "int" in text:
        return "i"
    return "f"
