"""Array namespaces at the edge of the scikit-learn estimators.

scikit-learn's array-API dispatch (``sklearn.config_context(
array_api_dispatch=True)``) means: inputs keep their namespace and device
(a torch tensor stays a torch tensor), the estimator computes there, and its
outputs come back in the namespace and on the device of ``X``. Without
dispatch every input is converted to NumPy by scikit-learn's validation and
every output is a NumPy array. These helpers decide which case applies and
move the estimator's results accordingly; the estimators never import an
array library themselves.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import array_api_compat
import numpy as np
import sklearn

from ..backend import Backend, resolve, to_numpy

__all__ = [
    "backend_for",
    "dispatching",
    "float_dtypes",
    "float_name",
    "foreign",
    "host",
    "like",
    "namespace_key",
    "take_rows",
]

NUMPY_KEY = ("array_api_compat.numpy", "cpu")


def dispatching() -> bool:
    """Whether scikit-learn's array-API dispatch is on."""
    return bool(sklearn.get_config().get("array_api_dispatch", False))


def _is_array(x: Any) -> bool:
    return array_api_compat.is_array_api_obj(x) and not isinstance(x, list | tuple)


def foreign(x: Any) -> bool:
    """Whether ``x`` keeps a namespace of its own: dispatch is on and ``x`` is
    an Array API array other than NumPy's (torch, CuPy, array-api-strict)."""
    return dispatching() and _is_array(x) and not array_api_compat.is_numpy_array(x)


def float_dtypes(x: Any) -> list[Any]:
    """The float dtypes validation may keep for ``x``, float64 first (what
    integers become), in ``x``'s namespace when it keeps its own."""
    if foreign(x):
        xp = array_api_compat.array_namespace(x)
        return [xp.float64, xp.float32]
    return [np.float64, np.float32]


def float_name(x: Any) -> str:
    """``"float32"`` for validated float32 input ``x``, else ``"float64"``."""
    if foreign(x):
        xp = array_api_compat.array_namespace(x)
        return "float32" if x.dtype == xp.float32 else "float64"
    return "float32" if x.dtype == np.float32 else "float64"


def namespace_key(x: Any) -> tuple[str, str]:
    """``(namespace name, device)`` of validated input ``x``, as strings (so a
    fitted estimator can record them and still pickle): NumPy's for
    anything that is not an array of another namespace."""
    if not foreign(x):
        return NUMPY_KEY
    xp = array_api_compat.array_namespace(x)
    return xp.__name__, str(array_api_compat.device(x))


def backend_for(x: Any) -> Backend | None:
    """The xpnet backend that computes in ``x``'s namespace and on its device,
    or ``None`` when xpnet has none there (then the caller's default runs and
    results are moved back)."""
    if not foreign(x):
        return None
    device = array_api_compat.device(x)
    if array_api_compat.is_torch_array(x):
        kind = getattr(device, "type", "cpu")
        if kind == "cpu":
            return resolve("cpu", "torch")
        if kind == "cuda":
            return resolve(f"cuda:{device.index or 0}", "torch")
        return None
    if array_api_compat.is_cupy_array(x):
        return resolve(f"cuda:{device.id}", "cupy")
    if array_api_compat.is_array_api_strict_namespace(
        array_api_compat.array_namespace(x)
    ):
        # array-api-strict's devices are all the CPU; xpnet allocates on
        # whichever one its Backend names.
        return dataclasses.replace(resolve("cpu", "array-api-strict"), device=device)
    return None


def host(x: Any) -> np.ndarray:
    """Any namespace's array (or array-like) as a NumPy array."""
    if isinstance(x, np.ndarray):
        return x
    if _is_array(x):
        return to_numpy(x)
    return np.asarray(x)


def like(result: Any, x: Any, dtype: Any = None) -> Any:
    """``result`` (an xpnet backend's array, or NumPy) in the namespace and on
    the device of ``x`` when ``x`` keeps its own, else as NumPy; cast to
    ``dtype`` (a dtype of ``x``'s namespace) when given."""
    if not foreign(x):
        out = host(result)
        return out if dtype is None else out.astype(dtype, copy=False)
    xp = array_api_compat.array_namespace(x)
    device = array_api_compat.device(x)
    same = (
        _is_array(result)
        and array_api_compat.array_namespace(result) is xp
        and array_api_compat.device(result) == device
    )
    if not same:
        values = host(result)
        if values.dtype.kind not in "biuf":
            return values  # e.g. string class labels: NumPy is their only home
        result = xp.asarray(values, device=device)
    return result if dtype is None else xp.astype(result, dtype)


def take_rows(x: Any, rows: np.ndarray) -> Any:
    """``x[rows]`` for host integer ``rows``, in ``x``'s namespace."""
    if not foreign(x):
        return x[rows]
    xp = array_api_compat.array_namespace(x)
    index = xp.asarray(rows, device=array_api_compat.device(x))
    return xp.take(x, index, axis=0)
