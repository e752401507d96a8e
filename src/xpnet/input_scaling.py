"""Scaling: how raw feature values (e.g. pixels 0-255) are mapped for a model,
chosen from the data or asked for, and checked when new samples arrive.

Host NumPy (an edge module); :mod:`xpnet.preprocessing` runs these as the
first step of its pipeline and re-exports the public names.
"""

from __future__ import annotations

import math

import numpy as np

from xpnet.errors import XpnetError

__all__ = ["describe_scaling", "scale", "scale_divisor"]


def scale(
    x: np.ndarray, *, max_value: float | None = None, dtype: str = "float32"
) -> np.ndarray:
    """Map pixel intensities to floats in [0, 1].

    Args:
        x: ``(n, n_features)`` (or any shape) intensities. uint8 pixels 0-255 are
            divided by 255.
        max_value: the value that maps to 1.0. Default: 255 for uint8; for other
            types 1 if the values already lie in [0, 1], 255 if they lie in
            [0, 255], otherwise an error (pass ``max_value``, or standardise
            instead).
        dtype: ``"float32"`` or ``"float64"``.

    Returns:
        ``x / max_value`` as ``dtype``, same shape as ``x``.
    """
    divisor = _scale_divisor(x, max_value=max_value)
    return _divide(x, divisor, _float_dtype(dtype))


def _scale_divisor(
    *arrays: np.ndarray, max_value: float | None = None, standardize: bool = False
) -> float:
    """The divisor that maps all ``arrays`` (jointly) into [0, 1]
    (``standardize``: whether standardisation follows, for the hint)."""
    if max_value is not None:
        if not max_value > 0:
            raise XpnetError(f"max_value must be positive, got {max_value}")
        return float(max_value)
    if all(a.dtype == np.uint8 for a in arrays):
        return 255.0
    lo = min((float(a.min()) for a in arrays if a.size), default=0.0)
    hi = max((float(a.max()) for a in arrays if a.size), default=0.0)
    if lo >= 0 and hi <= 1:
        return 1.0
    if lo >= 0 and hi <= 255:
        return 255.0
    instead = "" if standardize else ", or standardize instead of scaling"
    raise XpnetError(
        f"cannot scale values in [{lo:g}, {hi:g}] to [0, 1]: they are not 0-255 "
        f"pixels; give max_value{instead}"
    )


def scale_divisor(
    *arrays: np.ndarray, scale: bool | float | str = "auto", standardize: bool = False
) -> float | None:
    """What :func:`preprocess` divides ``arrays`` by (None: nothing).

    ``scale="auto"`` chooses from the data: uint8 arrays are pixels 0-255,
    divided by 255; anything else (floats, wider integers) is kept as it is,
    since dividing features such as 0..16 counts or centimetres by 255
    would silently change their meaning. ``True`` asks for [0, 1] as
    :func:`scale` maps it; ``False`` for none; a number is the divisor, and
    the values must lie in [0, number] (as prediction inputs will be
    checked against it).
    """
    if isinstance(scale, str):
        if scale != "auto":
            raise XpnetError(f"scale must be 'auto', a bool or a number, got {scale!r}")
        return 255.0 if all(a.dtype == np.uint8 for a in arrays) else None
    if scale is True:
        return _scale_divisor(*arrays, standardize=standardize)
    if scale is False or scale is None:
        return None
    divisor = _scale_divisor(*arrays, max_value=scale)
    lo = min((float(a.min()) for a in arrays if a.size), default=0.0)
    hi = max((float(a.max()) for a in arrays if a.size), default=0.0)
    if not (0 <= lo and hi <= divisor):
        # With standardisation asked for, "standardize instead" would be no
        # help: the scaling itself is what to change (issue 16 item 28).
        instead = "" if standardize else ", or standardize instead of scaling"
        fix = (
            f"negative values cannot be scaled into [0, 1]: drop the scaling{instead}"
            if lo < 0
            else f"scale by the largest possible value (at least {hi:g}){instead}"
        )
        raise XpnetError(
            f"scaling by {divisor:g} maps values 0-{divisor:g} to [0, 1], and the "
            f"data holds values in [{lo:g}, {hi:g}]: {fix}"
        )
    return divisor


def describe_scaling(divisor: float | None, scale: bool | float | str) -> str:
    """How :func:`preprocess` scaled the features, for the ``data:`` line:
    ``divisor`` as recorded, ``scale`` as asked (see :func:`scale_divisor`)."""
    if divisor is None:
        return "unscaled" + (
            " (not uint8 pixels: --scale MAX divides them)" if scale == "auto" else ""
        )
    if scale == "auto":
        return "pixels / 255"
    return f"scaled / {divisor:g}"


def _divide(x: np.ndarray, divisor: float, dtype: np.dtype) -> np.ndarray:
    out = x.astype(dtype, copy=True)
    if divisor != 1.0:
        out /= dtype.type(divisor)
    return out


def _float_dtype(dtype: str | np.dtype) -> np.dtype:
    dt = np.dtype(dtype)
    if dt not in (np.float32, np.float64):
        raise XpnetError(f"dtype must be float32 or float64, got {dt}")
    return dt


def _check_fits(x: np.ndarray, dtype: np.dtype, what: str = "the values") -> None:
    """Refuse finite floats that ``dtype`` would turn into infinities."""
    if x.dtype.kind != "f" or x.dtype.itemsize <= dtype.itemsize or not x.size:
        return
    with np.errstate(invalid="ignore"):
        largest = float(np.max(np.abs(x)))
    # NaN or inf: the checks of the values say so later.
    if math.isfinite(largest) and largest > float(np.finfo(dtype).max):
        raise XpnetError(
            f"{what} reach {largest:.3g}, beyond {dtype} (at most "
            f"{float(np.finfo(dtype).max):.3g}): rescale them, or use float64"
        )


def _input_divisor(x: np.ndarray, scale: float) -> float:
    """What to divide ``x`` by to bring it to [0, 1]; see :func:`transform`."""
    if x.dtype == bool or not np.issubdtype(x.dtype, np.number):
        raise XpnetError(f"expected numbers, got an array of {x.dtype}")
    if np.issubdtype(x.dtype, np.complexfloating):
        raise XpnetError("expected real numbers, got complex ones")
    if x.size == 0:
        return 1.0
    lo, hi = float(np.min(x)), float(np.max(x))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise XpnetError("the values include NaN or infinity")
    integers = np.issubdtype(x.dtype, np.integer)
    if not integers and 0 <= lo and hi <= 1:
        return 1.0
    top = 255.0 if integers and scale == 1 else float(scale)
    if 0 <= lo and hi <= top:
        return top
    expected = (f"pixels 0-{top:g}" if top == 255 else f"values in [0, {top:g}]") + (
        " or floats already scaled to [0, 1]" if top != 1 else ""
    )
    raise XpnetError(
        f"values in [{lo:g}, {hi:g}] do not fit this model's preprocessing, "
        f"which expects {expected}"
    )
