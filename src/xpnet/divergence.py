"""The divergence guard of :func:`xpnet.training.fit`, a callback.

See :class:`DivergenceGuard`; ``fit`` puts it first among its callbacks, so a
callback that saves checkpoints never sees (and never saves) a diverged epoch.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from .arraytypes import Array
from .callbacks.base import Callback
from .errors import DivergenceError

if TYPE_CHECKING:
    from .model import Sequential

__all__ = [
    "DIVERGENCE_FACTOR",
    "DIVERGENCE_FLOOR",
    "DIVERGENCE_SAMPLES",
    "DivergenceGuard",
    "divergence",
]

#: fit stops when an epoch's mean loss exceeds this many times the reference
#: loss measured before the first step (see :class:`DivergenceGuard`)
DIVERGENCE_FACTOR = 100.0
#: the reference loss is at least this, so a start near 0 cannot make the
#: limit tiny (e.g. MSE on all-zero targets)
DIVERGENCE_FLOOR = 0.01
#: at most this many samples (the first of X) measure the reference loss
DIVERGENCE_SAMPLES = 1024


class DivergenceGuard(Callback):
    """Decides after each epoch whether training has diverged.

    The reference loss is measured on the first batch (at least 256, at most
    1024 samples, the first of the first epoch's order) before its update:
    the larger of the model's loss there and the loss of all-zero outputs
    (``ln K`` for K-class cross-entropy on logits, ``ln 2`` for BCE on logits,
    half the mean squared target norm for MSE), and at least 0.01, so that a
    start near 0 (an already trained model, zero targets) cannot make the limit
    tiny. When the first step sees that many samples (``batch_size >= 256``),
    the guard takes its outputs (:meth:`epoch_terms`, read back with the first
    epoch's metrics: no pass of its own); otherwise it runs one forward
    pass on ``X[:256]`` and reads it back when made. An epoch diverged when its
    mean loss is NaN/inf or more than :data:`DIVERGENCE_FACTOR` times the
    reference, any weight is NaN/inf, the weights it ends with give a NaN/inf
    loss on the reference samples (:meth:`loss_now`: one forward pass per
    epoch, read back with the epoch's metrics), or the validation loss is
    NaN/inf: then :meth:`on_epoch_end` raises
    :class:`~xpnet.errors.DivergenceError`.
    ``own_pass`` forces the pass of its own (data parallel: a rank's first
    step sees only its share of the batch, and every rank must agree).
    """

    def __init__(
        self,
        model: Sequential,
        X: Array,
        y: Array,
        batch_size: int,
        own_pass: bool = False,
    ):
        self.model = model
        #: how many of the first samples the reference is measured on
        self.rows = min(X.shape[0], max(batch_size, 256), DIVERGENCE_SAMPLES)
        #: whether :attr:`reference` and :attr:`limit` are set
        self.measured = False
        self.reference = self.limit = math.nan
        self.weight_sum = self.loss_after = math.nan
        # The reference rows in X's given order, and their float targets,
        # for the check of the weights each epoch ends with.
        self.X, self.targets = (
            X[: self.rows, ...],
            model.loss.targets(y[: self.rows, ...], model.out_features),
        )
        if own_pass or self.rows > batch_size:
            out = self.model.forward(self.X)
            model_loss, zero_loss = model.read_floats(
                *self.terms(out, y[: self.rows, ...])
            )
            self.set_reference(model_loss, zero_loss)

    def terms(self, out: Array, y: Array) -> list[Array]:
        """The two 0-d losses the reference is the larger of, for the outputs
        ``out: (rows, outputs)`` of the first :attr:`rows` samples before any
        update and their targets ``y``: the model's, and all-zero outputs'."""
        loss, xp = self.model.loss, self.model.xp
        return [loss(out, y), loss(xp.zeros_like(out), y)]

    def loss_now(self) -> Array:
        """The 0-d loss of the current weights on the first :attr:`rows`
        samples of X (in their given order), on the device. The epoch's mean
        loss comes from the outputs each batch had *before* its update, so an
        epoch whose last updates overflow the weights can report a finite
        loss while its final weights give NaN: this is the check of what
        would be saved."""
        out = self.model.forward(self.X)
        return self.model.loss.value(out, self.targets)

    def epoch_terms(self, outs: Array, targets: Array) -> list[Array]:
        # The weights' sum (any NaN or inf weight makes it non-finite), the
        # final weights' loss and, in the first epoch, the reference from the
        # first step's outputs.
        terms = [self.model.xp.sum(self.model.parameters.flat), self.loss_now()]
        if not self.measured:
            terms += self.terms(outs[: self.rows, ...], targets[: self.rows, ...])
        return terms

    def take_epoch_terms(self, values: list[float]) -> None:
        self.weight_sum, self.loss_after = values[:2]
        if not self.measured:
            self.set_reference(*values[2:4])

    def set_reference(self, model_loss: float, zero_loss: float) -> None:
        """Set the reference and the limit from the two :meth:`terms`."""
        start = max(model_loss, zero_loss)
        if math.isnan(model_loss) or math.isnan(zero_loss):
            start = math.nan
        self.reference = max(start, DIVERGENCE_FLOOR)  # NaN stays NaN
        # A start that is already NaN/inf leaves only the non-finite checks.
        finite = math.isfinite(self.reference)
        self.limit = DIVERGENCE_FACTOR * self.reference if finite else math.inf
        self.measured = True

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        self.check_epoch(logs["loss"], self.weight_sum, self.loss_after)
        if "val_loss" in logs:
            self.check_validation(logs["val_loss"])

    def check_epoch(
        self, mean_loss: float, weight_sum: float, loss_now: float = 0.0
    ) -> None:
        """Raise :class:`DivergenceError` if the epoch's numbers show divergence.

        ``weight_sum``: the sum of all parameters, finite whenever they all are
        (unless finite values overflow it, which then costs a full check).
        ``loss_now``: :meth:`loss_now` after the epoch, read back.
        """
        if not math.isfinite(mean_loss):
            raise self.error(f"the loss is {mean_loss}")
        if mean_loss > self.limit:
            raise self.error(
                f"the loss {mean_loss:.4g} is over {DIVERGENCE_FACTOR:g}x the "
                f"starting loss {self.reference:.4g}"
            )
        if not math.isfinite(weight_sum) and not self.model.weights_finite():
            raise self.error("the weights hold NaN or infinite values")
        if not math.isfinite(loss_now):
            raise self.error(
                f"the weights after its last update give a loss of {loss_now} on "
                f"the first {self.rows} samples"
            )

    def check_validation(self, val_loss: float) -> None:
        if not math.isfinite(val_loss):
            raise self.error(f"the validation loss is {val_loss}")

    def error(self, why: str) -> DivergenceError:
        return divergence(self.model, why)


def divergence(model: Sequential, why: str) -> DivergenceError:
    """The one-line error of a run that diverged in its last epoch, ``why``."""
    return DivergenceError(
        f"training diverged in epoch {model.epochs_trained}: {why}; lower the "
        f"learning rate (now {model.optimizer.lr:g}), e.g. by 10x"
    )
