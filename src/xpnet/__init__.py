"""xpnet: multilayer perceptrons written once against the Python Array API standard."""

__version__ = "0.1.0"
