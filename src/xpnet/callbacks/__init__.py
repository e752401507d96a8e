"""Callbacks for :meth:`xpnet.Sequential.fit` (Keras names where they exist).

- :class:`Callback`, :class:`LambdaCallback`: the seam (see :mod:`.base`);
- :class:`EarlyStopping`, :class:`ReduceLROnPlateau`: decisions from a
  monitored value (see :mod:`.monitor`);
- :class:`ModelCheckpoint`: the model as an xpnet checkpoint after each
  epoch, or after each best one;
- :class:`CSVLogger`, :class:`JSONLinesLogger`, :class:`TensorBoard`: one
  row, line or event per epoch (see :mod:`.logs`).

Every callback that writes files writes only on the lead process (rank 0 of a
data-parallel run) and creates its files exclusively, without following
links; ``state()``/``load_state()`` carry what an exact resume needs.
"""

from __future__ import annotations

from .base import BatchLogs, Callback, CallbackList, LambdaCallback
from .logs import CSVLogger, JSONLinesLogger, TensorBoard
from .monitor import EarlyStopping, ReduceLROnPlateau
from .saving import ModelCheckpoint

__all__ = [
    "BatchLogs",
    "CSVLogger",
    "Callback",
    "CallbackList",
    "EarlyStopping",
    "JSONLinesLogger",
    "LambdaCallback",
    "ModelCheckpoint",
    "ReduceLROnPlateau",
    "TensorBoard",
]
