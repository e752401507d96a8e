"""Weight initialisers, drawn from one seeded host RNG.

All randomness is drawn on the host with ``numpy.random.Generator`` in float64
and only then cast and copied to the device, so a given seed gives
bit-identical initial weights on every backend and device.

References: He et al. 2015, "Delving Deep into Rectifiers"
(https://arxiv.org/abs/1502.01852); Glorot & Bengio 2010, "Understanding the
difficulty of training deep feedforward neural networks".
"""

from __future__ import annotations

import math

import numpy as np

from .errors import XpnetError


def he_normal(rng: np.random.Generator, fan_in: int, fan_out: int) -> np.ndarray:
    """N(0, 2 / fan_in): keeps ReLU activations' variance constant with depth."""
    return rng.normal(0.0, math.sqrt(2.0 / fan_in), size=(fan_in, fan_out))


def he_uniform(rng: np.random.Generator, fan_in: int, fan_out: int) -> np.ndarray:
    """U(-a, a) with a = sqrt(6 / fan_in): the same variance as :func:`he_normal`."""
    limit = math.sqrt(6.0 / fan_in)
    return rng.uniform(-limit, limit, size=(fan_in, fan_out))


def glorot_normal(rng: np.random.Generator, fan_in: int, fan_out: int) -> np.ndarray:
    """N(0, 2 / (fan_in + fan_out)), for tanh, sigmoid and linear outputs."""
    return rng.normal(0.0, math.sqrt(2.0 / (fan_in + fan_out)), size=(fan_in, fan_out))


def glorot_uniform(rng: np.random.Generator, fan_in: int, fan_out: int) -> np.ndarray:
    """U(-a, a) with a = sqrt(6 / (fan_in + fan_out)) (Xavier)."""
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=(fan_in, fan_out))


def zeros(rng: np.random.Generator, fan_in: int, fan_out: int) -> np.ndarray:
    """All zeros (for tests and linear probes; hidden layers then stay symmetric)."""
    return np.zeros((fan_in, fan_out))


INITIALIZERS = {
    "he_normal": he_normal,
    "he_uniform": he_uniform,
    "glorot_normal": glorot_normal,
    "glorot_uniform": glorot_uniform,
    "xavier_normal": glorot_normal,
    "xavier_uniform": glorot_uniform,
    "zeros": zeros,
}


def initial_weights(
    name: str, rng: np.random.Generator | None, fan_in: int, fan_out: int
) -> np.ndarray:
    """Host float64 weights ``(fan_in, fan_out)`` from initialiser ``name``."""
    try:
        init = INITIALIZERS[name]
    except KeyError:
        raise XpnetError(
            f"unknown initialiser {name!r}: choose one of {', '.join(INITIALIZERS)}"
        ) from None
    if rng is None:
        rng = np.random.default_rng(0)
    return init(rng, fan_in, fan_out)


def __getattr__(name: str) -> object:
    # Moved to xpnet.rng in 0.2: the old names still work, with a warning.
    if name in ("make_rngs", "permutation"):
        import warnings

        from . import rng

        warnings.warn(
            f"xpnet.initializers.{name} moved to xpnet.rng.{name}",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(rng, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
