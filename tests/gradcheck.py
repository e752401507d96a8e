"""Central finite differences in float64, to check analytic gradients."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

TOLERANCE = 1e-6

# Largest error per check, reported by tests/conftest.py at the end of the run.
GRADCHECK_ERRORS: dict[str, float] = {}


def numeric_gradient(
    f: Callable[[np.ndarray], float], x: np.ndarray, eps: float = 1e-6
) -> np.ndarray:
    """dF/dx by central differences, (f(x + eps) - f(x - eps)) / (2 eps)."""
    x = np.array(x, dtype=np.float64)
    grad = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        old = x[idx]
        x[idx] = old + eps
        plus = f(x.copy())
        x[idx] = old - eps
        minus = f(x.copy())
        x[idx] = old
        grad[idx] = (plus - minus) / (2 * eps)
    return grad


def relative_error(analytic: np.ndarray, numeric: np.ndarray) -> float:
    """||a - n|| / max(||a|| + ||n||, 1e-12): 0 when equal, 1 when unrelated."""
    analytic = np.asarray(analytic, dtype=np.float64)
    numeric = np.asarray(numeric, dtype=np.float64)
    denom = max(np.linalg.norm(analytic) + np.linalg.norm(numeric), 1e-12)
    return float(np.linalg.norm(analytic - numeric) / denom)


def assert_gradient(name: str, analytic, numeric, tol: float = TOLERANCE) -> None:
    assert np.asarray(analytic).shape == np.asarray(numeric).shape, name
    assert np.linalg.norm(numeric) > 0, f"{name}: numeric gradient is all zeros"
    err = relative_error(analytic, numeric)
    GRADCHECK_ERRORS[name] = max(err, GRADCHECK_ERRORS.get(name, 0.0))
    assert err < tol, f"{name}: relative error {err:.3e} >= {tol}"
