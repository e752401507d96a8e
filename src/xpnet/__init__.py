"""xpnet: multilayer perceptrons written once against the Python Array API standard.

The same layer, loss and optimizer code runs on NumPy (CPU), CuPy (CUDA GPUs),
PyTorch tensors and ``array_api_strict``::

    import xpnet
    model = xpnet.mlp([784, 256, 10], device="cpu", seed=0)
    model.fit(X, y, epochs=5, batch_size=64)
"""

__version__ = "0.2.0"

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .activations import (
        ELU,
        GELU,
        Identity,
        LeakyReLU,
        ReLU,
        Sigmoid,
        SiLU,
        Softmax,
        Softplus,
        Tanh,
        get_activation,
    )
    from .backend import Backend, resolve, to_numpy
    from .errors import DeviceError, DivergenceError, XpnetError
    from .layers import Dense, Layer
    from .losses import (
        BinaryCrossEntropy,
        CrossEntropy,
        Loss,
        MeanSquaredError,
        PoissonDeviance,
        get_loss,
    )
    from .model import History, Sequential, mlp
    from .onnx_export import export_onnx
    from .optimizers import SGD, Adam, AdamW, Optimizer, get_optimizer
    from .preprocessing import Preprocessing
    from .saving import load, save
    from .schedules import (
        Constant,
        CosineDecay,
        ExponentialDecay,
        InverseTimeDecay,
        Schedule,
        StepDecay,
        Warmup,
    )

# Public names load their module on first use, so ``import xpnet`` (and the
# command line's start-up) does not import every array library at once.
_EXPORTS = {
    "Adam": "optimizers",
    "AdamW": "optimizers",
    "Backend": "backend",
    "BinaryCrossEntropy": "losses",
    "Constant": "schedules",
    "CosineDecay": "schedules",
    "CrossEntropy": "losses",
    "Dense": "layers",
    "DeviceError": "errors",
    "DivergenceError": "errors",
    "ELU": "activations",
    "ExponentialDecay": "schedules",
    "GELU": "activations",
    "History": "model",
    "Identity": "activations",
    "InverseTimeDecay": "schedules",
    "Layer": "layers",
    "LeakyReLU": "activations",
    "Loss": "losses",
    "MeanSquaredError": "losses",
    "Optimizer": "optimizers",
    "PoissonDeviance": "losses",
    "Preprocessing": "preprocessing",
    "ReLU": "activations",
    "SGD": "optimizers",
    "Schedule": "schedules",
    "Sequential": "model",
    "SiLU": "activations",
    "Sigmoid": "activations",
    "Softmax": "activations",
    "Softplus": "activations",
    "StepDecay": "schedules",
    "Tanh": "activations",
    "Warmup": "schedules",
    "XpnetError": "errors",
    "export_onnx": "onnx_export",
    "get_activation": "activations",
    "get_loss": "losses",
    "get_optimizer": "optimizers",
    "load": "saving",
    "mlp": "model",
    "resolve": "backend",
    "save": "saving",
    "to_numpy": "backend",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'xpnet' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "ELU",
    "GELU",
    "SGD",
    "Adam",
    "AdamW",
    "Backend",
    "BinaryCrossEntropy",
    "Constant",
    "CosineDecay",
    "CrossEntropy",
    "Dense",
    "DeviceError",
    "DivergenceError",
    "ExponentialDecay",
    "History",
    "Identity",
    "InverseTimeDecay",
    "Layer",
    "LeakyReLU",
    "Loss",
    "MeanSquaredError",
    "Optimizer",
    "PoissonDeviance",
    "Preprocessing",
    "ReLU",
    "Schedule",
    "Sequential",
    "SiLU",
    "Sigmoid",
    "Softmax",
    "Softplus",
    "StepDecay",
    "Tanh",
    "Warmup",
    "XpnetError",
    "export_onnx",
    "get_activation",
    "get_loss",
    "get_optimizer",
    "load",
    "mlp",
    "resolve",
    "save",
    "to_numpy",
]
