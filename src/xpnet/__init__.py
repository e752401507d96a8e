"""xpnet: multilayer perceptrons written once against the Python Array API standard.

The same layer, loss and optimizer code runs on NumPy (CPU), CuPy (CUDA GPUs),
PyTorch tensors and ``array_api_strict``::

    import xpnet
    model = xpnet.mlp([784, 256, 10], device="cpu", seed=0)
    model.fit(X, y, epochs=5, batch_size=64)
"""

__version__ = "0.1.0"

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
from .losses import BinaryCrossEntropy, CrossEntropy, Loss, MeanSquaredError, get_loss
from .model import History, Sequential, mlp
from .optimizers import SGD, Adam, AdamW, Optimizer, get_optimizer
from .schedules import Constant, CosineDecay, InverseTimeDecay, Schedule, StepDecay

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
    "History",
    "Identity",
    "InverseTimeDecay",
    "Layer",
    "LeakyReLU",
    "Loss",
    "MeanSquaredError",
    "Optimizer",
    "ReLU",
    "Schedule",
    "Sequential",
    "SiLU",
    "Sigmoid",
    "Softmax",
    "Softplus",
    "StepDecay",
    "Tanh",
    "XpnetError",
    "get_activation",
    "get_loss",
    "get_optimizer",
    "mlp",
    "resolve",
    "to_numpy",
]
